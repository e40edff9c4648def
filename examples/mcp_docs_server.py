"""A small documentation server for examples/mcp_agent.yaml, written with the `mcp` SDK (stdio).

Tools: `search_docs(query)` (titles and first lines of the matching pages) and `read_page(title)`
(a page's full text). The pages are a fixed in-memory set, so runs of the example replay exactly.

    python -m examples.mcp_docs_server      # what the workflow starts (stdio)
"""

from __future__ import annotations

try:  # mcp 2.x renamed FastMCP to MCPServer
    from mcp.server.mcpserver import MCPServer as Server
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as Server
    from mcp.server.fastmcp.exceptions import ToolError

PAGES: dict[str, str] = {
    "Rate limits": (
        "Each API key may send 600 requests per minute, with bursts of up to 100 requests. "
        "Requests over the limit get HTTP 429 with a Retry-After header. "
        "Batch jobs share their key's limit with interactive traffic; give them a key of their own."
    ),
    "Retries": (
        "Retry 429 and 5xx responses with exponential backoff starting at 1 second, "
        "honouring Retry-After when present. Never retry 4xx other than 429."
    ),
    "Authentication": "Send the key in the Authorization header as 'Bearer <key>'. Keys never expire.",
}


def build() -> Server:
    server = Server("charter-docs")

    @server.tool()
    def search_docs(query: str) -> list[dict[str, str]]:
        """Search the product documentation; returns the titles and first sentences of matching pages."""
        words = [w for w in query.lower().split() if len(w) > 2]
        hits = [
            {"title": title, "snippet": text.split(". ")[0] + "."}
            for title, text in PAGES.items()
            if any(w in (title + " " + text).lower() for w in words)
        ]
        return hits

    @server.tool()
    def read_page(title: str) -> str:
        """The full text of one documentation page, by its exact title."""
        if title not in PAGES:
            raise ToolError(f"no page titled {title!r}; pages: {', '.join(PAGES)}")
        return PAGES[title]

    return server


if __name__ == "__main__":
    build().run("stdio")
