"""Client side of the stack: serving contracts now; the gRPC/REST client comes with its issue."""
