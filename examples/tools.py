"""Python tools used by the example workflows (`python: "examples.tools:NAME"`).

Every tool is pure and deterministic: the same arguments give the same result, and nothing outside the
process changes, so example runs replay exactly. Data are small in-memory fixtures standing in for the
billing system, the knowledge base and the order store a real deployment would call.
"""

from __future__ import annotations

from typing import Any

# --- fixtures --------------------------------------------------------------------------------------------

_INVOICES: dict[str, dict[str, Any]] = {
    "INV-1001": {
        "invoice_id": "INV-1001",
        "customer": "ACME Corp",
        "amount": 420.0,
        "currency": "EUR",
        "status": "paid",
    },
    "INV-1002": {
        "invoice_id": "INV-1002",
        "customer": "ACME Corp",
        "amount": 89.9,
        "currency": "EUR",
        "status": "paid",
    },
    "INV-2001": {
        "invoice_id": "INV-2001",
        "customer": "Globex",
        "amount": 1250.0,
        "currency": "USD",
        "status": "open",
    },
}

_ORDERS: dict[str, dict[str, Any]] = {
    "ORD-7": {
        "order_id": "ORD-7",
        "customer": "dana@example.com",
        "total": 64.5,
        "status": "delivered damaged",
    },
    "ORD-8": {"order_id": "ORD-8", "customer": "lee@example.com", "total": 740.0, "status": "delivered"},
}

_KNOWLEDGE_BASE: dict[str, list[dict[str, str]]] = {
    "docs": [
        {"title": "Rate limits", "text": "The API allows 600 requests per minute per key; bursts up to 100."},
        {"title": "Retries", "text": "Clients should retry 429 and 5xx responses with exponential backoff."},
    ],
    "forum": [
        {"title": "Hitting 429s at night", "text": "Batch jobs share the per-key limit; use a second key."},
    ],
    "changelog": [
        {"title": "v2.3", "text": "Per-key limit raised from 300 to 600 requests per minute."},
    ],
    "kb": [
        {
            "title": "Reset password",
            "text": "Use Settings > Security > Reset; links expire after 30 minutes.",
        },
        {"title": "Sync stuck", "text": "Sign out and in again; if it persists, clear the local cache."},
    ],
}

_COMPANIES: dict[str, dict[str, Any]] = {
    "ACME Corp": {"name": "ACME Corp", "country": "DE", "rating": "A", "employees": 1200},
    "Globex": {"name": "Globex", "country": "US", "rating": "BBB", "employees": 5400},
}

_PRICES: dict[str, float] = {"SKU-1": 12.5, "SKU-2": 40.0, "SKU-3": 7.25, "XSKU-9": 99.0}

_ORDER_PAGES: list[dict[str, Any]] = [
    {"items": [{"sku": "SKU-1", "qty": 4}, {"sku": "SKU-2", "qty": 1}], "has_more": True},
    {"items": [{"sku": "XSKU-9", "qty": 2}, {"sku": "SKU-3", "qty": 10}], "has_more": False},
]


# --- billing and support ---------------------------------------------------------------------------------


def lookup_invoice(invoice_id: str) -> dict[str, Any]:
    """The invoice with this id."""
    if invoice_id not in _INVOICES:
        raise LookupError(f"no invoice {invoice_id}")
    return dict(_INVOICES[invoice_id])


def lookup_order(order_id: str) -> dict[str, Any]:
    """The order with this id."""
    if order_id not in _ORDERS:
        raise LookupError(f"no order {order_id}")
    return dict(_ORDERS[order_id])


def issue_refund(order_id: str, amount: float, reason: str) -> dict[str, Any]:
    """Refund part or all of an order (deterministic receipt; a real one would call the billing API)."""
    order = lookup_order(order_id)
    if amount <= 0 or amount > order["total"]:
        raise ValueError(f"refund of {amount} is outside 0..{order['total']}")
    return {
        "refund_id": f"RF-{order_id}-{int(amount * 100)}",
        "order_id": order_id,
        "amount": amount,
        "status": "issued",
    }


def send_email(to: str, subject: str, body: str) -> dict[str, Any]:
    """Queue an email (returns the queued message; nothing is sent)."""
    return {"queued": True, "to": to, "subject": subject, "length": len(body)}


def lookup_company(name: str) -> dict[str, Any]:
    """Public facts about a company."""
    return dict(
        _COMPANIES.get(name, {"name": name, "country": "unknown", "rating": "unrated", "employees": 0})
    )


def search(source: str, query: str) -> list[dict[str, str]]:
    """Entries of a knowledge source whose title or text shares a word with the query."""
    words = {w.lower().strip("?.,!") for w in query.split() if len(w) > 2}
    entries = _KNOWLEDGE_BASE.get(source, [])
    return [
        e
        for e in entries
        if words & {w.lower().strip("?.,!;") for w in (e["title"] + " " + e["text"]).split()}
    ]


# --- expenses --------------------------------------------------------------------------------------------


def expense_total(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of an expense report's items, by category."""
    by_category: dict[str, float] = {}
    for item in items:
        by_category[item["category"]] = round(
            by_category.get(item["category"], 0.0) + float(item["amount"]), 2
        )
    return {"total": round(sum(by_category.values()), 2), "by_category": by_category}


def book_expense(employee: str, total: float, approved_by: str | None = None) -> dict[str, Any]:
    """Book an expense report (deterministic booking number)."""
    return {
        "booking": f"EXP-{employee.upper()}-{int(total * 100)}",
        "total": total,
        "approved_by": approved_by,
    }


# --- orders pipeline -------------------------------------------------------------------------------------


def fetch_orders_page(page: int) -> dict[str, Any]:
    """One page of pending order lines."""
    if page < 0 or page >= len(_ORDER_PAGES):
        return {"items": [], "has_more": False}
    return dict(_ORDER_PAGES[page])


def quote_price(sku: str, qty: int) -> dict[str, Any]:
    """Live price quote. The quote service does not know discontinued (X-prefixed) SKUs and raises."""
    if sku.startswith("X") or sku not in _PRICES:
        raise LookupError(f"no quote for {sku}")
    return {
        "sku": sku,
        "qty": qty,
        "unit": _PRICES[sku],
        "amount": round(_PRICES[sku] * qty, 2),
        "source": "quote",
    }


def list_price(sku: str, qty: int) -> dict[str, Any]:
    """Catalogue price, the fallback when no quote is available."""
    unit = _PRICES.get(sku, 0.0)
    return {"sku": sku, "qty": qty, "unit": unit, "amount": round(unit * qty, 2), "source": "list"}


def summarize_lines(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Total and count of priced order lines."""
    return {"total": round(sum(float(line["amount"]) for line in lines), 2), "count": len(lines)}
