"""Pins the uvicorn internals `serving.rest.http` subclasses and calls.

`_LimitedH11Protocol` was written against uvicorn 0.54.0 (h11 0.16.0, see constraints.txt). No
public uvicorn.Config option gives its behaviour (see the comment block in http.py), so it
overrides private H11Protocol methods and reads private attributes. Each test here names one
of them; when an upgrade renames or reshapes one, the test fails with what to re-check, before
a limit silently stops answering. On an upgrade, re-read uvicorn/protocols/http/h11_impl.py
(`__init__`, `connection_made`, `data_received`, `handle_events`, `send_400_response`,
`pause_writing`) and uvicorn/server.py (`Server.shutdown`, `create_protocol`), then update
PINNED_UVICORN.
"""

from __future__ import annotations

import asyncio
import inspect
from unittest import mock

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

PINNED_UVICORN = "0.54.0"

# Method -> the parameter names http.py overrides or calls it with (besides self).
OVERRIDDEN = {
    "__init__": ["config", "server_state", "app_state", "_loop"],
    "connection_made": ["transport"],
    "connection_lost": ["exc"],
    "data_received": ["data"],
    "pause_writing": [],
    "resume_writing": [],
    "shutdown": [],
    "send_400_response": ["msg"],
}


def _parameters(function) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


def test_the_pinned_uvicorn_is_installed():
    assert uvicorn.__version__ == PINNED_UVICORN, (
        f"uvicorn is {uvicorn.__version__}; serving/rest/http.py's _LimitedH11Protocol was "
        f"checked against {PINNED_UVICORN}: re-check the names pinned in this file and update "
        "PINNED_UVICORN"
    )


def test_overridden_h11protocol_methods_keep_their_signatures():
    for name, expected in OVERRIDDEN.items():
        method = getattr(H11Protocol, name, None)
        assert method is not None, f"H11Protocol.{name} is gone; http.py overrides it"
        assert _parameters(method) == expected, (
            f"H11Protocol.{name}{inspect.signature(method)} changed; http.py overrides it "
            f"expecting parameters {expected}"
        )


def _protocol() -> tuple[H11Protocol, asyncio.AbstractEventLoop]:
    config = uvicorn.Config(app=mock.Mock(), lifespan="off", log_config=None)
    config.load()
    loop = asyncio.new_event_loop()
    protocol = H11Protocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    return protocol, loop


def test_h11protocol_has_the_attributes_http_py_reads_and_replaces():
    protocol, loop = _protocol()
    try:
        # http.py replaces `conn` after __init__, so uvicorn must parse with `self.conn`.
        assert isinstance(protocol.conn, h11.Connection), "H11Protocol.conn is not h11's"
        assert protocol.loop is loop, "H11Protocol.loop is not the event loop it was given"
        assert protocol.config is not None, "H11Protocol.config is gone"
        assert hasattr(protocol, "cycle"), "H11Protocol.cycle is gone (http.py's _idle)"
        assert hasattr(protocol, "server_state"), "H11Protocol.server_state is gone"
        transport = mock.Mock()
        transport.get_extra_info.return_value = None
        protocol.connection_made(transport)
        assert protocol.transport is transport, "connection_made no longer sets transport"
        assert hasattr(protocol, "client"), "connection_made no longer sets client"
        assert protocol in protocol.server_state.connections, (
            "server_state.connections no longer holds open protocols (_Server.shutdown aborts them)"
        )
    finally:
        loop.close()


def test_a_parse_error_reaches_send_400_response_through_self_conn():
    # _LimitedConnection raises RemoteProtocolError with its refusal; uvicorn must route it
    # to send_400_response, which http.py overrides to answer 414/431/400 with the reason.
    protocol, loop = _protocol()
    try:
        transport = mock.Mock()
        transport.get_extra_info.return_value = None
        protocol.connection_made(transport)
        protocol.conn = mock.Mock(wraps=protocol.conn)
        with mock.patch.object(H11Protocol, "send_400_response") as send_400:
            protocol.data_received(b"NOT HTTP\r\n\r\n")
        assert protocol.conn.receive_data.called, "data_received no longer feeds self.conn"
        assert send_400.call_count == 1, "a RemoteProtocolError no longer calls send_400_response"
    finally:
        loop.close()


def test_cycle_reports_response_complete():
    from uvicorn.protocols.http.h11_impl import RequestResponseCycle

    assert "response_complete" in inspect.getsource(RequestResponseCycle.__init__), (
        "RequestResponseCycle.response_complete is gone (http.py's _idle reads it)"
    )


def test_server_internals_used_by_http_py():
    assert _parameters(uvicorn.Server.shutdown) == ["sockets"], "Server.shutdown(sockets) changed"
    server = uvicorn.Server(uvicorn.Config(app=mock.Mock()))
    for name in ("server_state", "started", "should_exit"):
        assert hasattr(server, name), f"uvicorn.Server.{name} is gone; http.py uses it"
    assert hasattr(server.server_state, "connections"), "ServerState.connections is gone"
    assert "sockets" in inspect.signature(uvicorn.Server.serve).parameters
    # uvicorn calls `http=` factories with these keywords (Server.create_protocol).
    source = inspect.getsource(uvicorn.Server.startup)
    for keyword in ("config=config", "server_state=", "app_state=", "_loop="):
        assert keyword in source, f"Server.startup no longer passes {keyword} to the protocol"
