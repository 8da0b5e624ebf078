"""Canary releases from the client's side: weighted routing, shadow calls, how two versions'
answers agree, and the generator's judge."""
