"""Key-looking values never reach a log in a URL (finding 8: ``?api_key=`` was refused but written
verbatim to the access log)."""

from __future__ import annotations

import logging

import pytest

from minipay.server._redact import redact_url
from tests.server.conftest import KEYS, SUB1, World

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/v1/payments?api_key=sk_live_0123456789abcdef", "/v1/payments?api_key=***"),
        (
            "/v1/payments?limit=5&access_token=abc&status=pending",
            "/v1/payments?limit=5&access_token=***&status=pending",
        ),
        ("/x?Authorization=Bearer%20abc", "/x?Authorization=***"),
        ("/x?q=sk_test_abcdefgh", "/x?q=***"),  # a service key under any name
        ("/x?whsec_0123456789abcdef0123", "/x?***"),  # a bare key
        ("/x?cursor=AAAABBBBCCCCDDDDEEEEFFFF0000", "/x?cursor=***"),  # anything key-length is masked
        ("https://u:pa55@hooks.example/h?sig=1#frag", "https://u:***@hooks.example/h?sig=***#frag"),
        ("https://hooks.example/h?x=1&y=", "https://hooks.example/h?x=1&y="),
        ("/v1/payments?status=succeeded&limit=20", "/v1/payments?status=succeeded&limit=20"),
        ("/healthz", "/healthz"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


async def test_a_key_in_the_query_is_refused_and_never_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    key = KEYS[SUB1]
    with caplog.at_level(logging.DEBUG):
        response = await world.api.get(f"/v1/payments?api_key={key}")
        assert response.status_code == 401
        # What uvicorn's access log writes for that request (under `uvicorn --factory ...`).
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/v1/payments?api_key={key}", "1.1", 401
        )
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/v1/payments?limit=2&key={key}", "1.1", 401
        )
    assert "api_key=***" in caplog.text
    assert key not in caplog.text


async def test_a_webhook_url_token_is_not_logged_by_the_http_client(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    token = "tok_receiver_0123456789abcdef"
    created = await world.api.post(
        "/v1/webhook-endpoints", json={"url": f"http://hooks.example/hooks?token={token}"}, headers=world.auth()
    )
    assert created.status_code == 201
    await world.pay(await world.create_payment())
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="httpx2"):
        sent = await world.container.webhook_sender.send(f"http://hooks.example/hooks?token={token}", b"{}", {})
    assert sent == 200
    assert "HTTP Request" in caplog.text
    assert token not in caplog.text
