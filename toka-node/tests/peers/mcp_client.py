#!/usr/bin/env python3
"""A real MCP client (the official Python SDK, `mcp` on PyPI) driven by
toka-node/tests/mcp_server.rs.

Reads one JSON document on stdin (the token travels there, never in argv):

    {"url": "http://127.0.0.1:PORT/mcp", "token": "...",
     "steps": [{"op": "list"}, {"op": "call", "name": "fs.read", "args": {...}}]}

connects over streamable HTTP with `Authorization: Bearer <token>`, initializes, runs
the steps in order and prints one JSON document on stdout:

    {"server": {"name", "version", "protocol"},
     "steps": [{"tools": [{"name", "description", "inputSchema", "annotations"}]},
               {"isError": false, "text": "...", "structured": {...}},
               {"rpcError": {"code": -32602, "message": "..."}}]}

or, if connecting or initializing failed, {"connectError": "...", "statuses": [401],
"errorBodies": ["{\"error\": ...}"]} (the HTTP statuses the client saw, and the bodies
of those >= 400).
Set up with toka-node/tests/peers/setup.sh (a pinned venv beside this file).
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


async def _step(session: ClientSession, step: dict) -> dict:
    try:
        if step["op"] == "list":
            tools = []
            cursor = None
            while True:
                params = None
                if cursor is not None:
                    from mcp.types import PaginatedRequestParams

                    params = PaginatedRequestParams(cursor=cursor)
                page = await session.list_tools(params=params)
                tools.extend(
                    t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in page.tools
                )
                cursor = page.next_cursor
                if cursor is None:
                    break
            return {"tools": tools}
        if step["op"] == "call":
            result = await session.call_tool(step["name"], step.get("args", {}))
            text = "".join(getattr(c, "text", "") for c in result.content)
            return {
                "isError": bool(result.is_error),
                "text": text,
                "structured": result.structured_content,
            }
        raise ValueError(f"unknown op {step['op']!r}")
    except MCPError as e:
        return {"rpcError": {"code": e.code, "message": e.message}}


async def main() -> dict:
    plan = json.load(sys.stdin)
    headers = {"Authorization": f"Bearer {plan['token']}"}
    out: dict = {}
    statuses: list[int] = []

    async def record(response) -> None:
        statuses.append(response.status_code)
        if response.status_code >= 400:
            await response.aread()
            out.setdefault("errorBodies", []).append(response.text)

    try:
        async with create_mcp_http_client(headers=headers) as http:
            http.event_hooks["response"].append(record)
            async with streamable_http_client(plan["url"], http_client=http) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write, read_timeout_seconds=60) as session:
                    init = await session.initialize()
                    out["server"] = {
                        "name": init.server_info.name,
                        "version": init.server_info.version,
                        "protocol": str(init.protocol_version),
                    }
                    out["steps"] = [await _step(session, step) for step in plan["steps"]]
    except BaseException as exc:  # noqa: BLE001 - reported to the test, which decides
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if "steps" in out:
            raise
        return {"connectError": repr(exc)[:2000], "statuses": statuses, **out}
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
