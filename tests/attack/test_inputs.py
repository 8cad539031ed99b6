"""Inputs at the edge of their types answer 400, never 500."""

from __future__ import annotations

import pytest

from tests.server.conftest import World

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "query",
    [
        {"created_gte": "0001-01-01T00:00:00+14:00"},
        {"created_lt": "9999-12-31T23:59:59-14:00"},
        {"created_gte": "0001-01-01T00:00:00+00:01", "created_lt": "9999-12-31T23:59:59-00:01"},
    ],
)
async def test_datetimes_without_a_utc_equivalent_are_invalid_fields(world: World, query: dict[str, str]) -> None:
    # Finding 4: the conversion to UTC overflowed into a 500.
    response = await world.api.get("/v1/payments", params=query, headers=world.auth())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_field"


async def test_the_extreme_datetimes_that_do_convert_are_accepted(world: World) -> None:
    query = {"created_gte": "0001-01-01T00:00:00+00:00", "created_lt": "9999-12-31T23:59:59+00:00"}
    response = await world.api.get("/v1/payments", params=query, headers=world.auth())
    assert response.status_code == 200, response.text


async def test_405_names_the_allowed_methods(world: World) -> None:
    # Finding 9: 405 came without the Allow header HTTP requires.
    response = await world.api.delete("/v1/payments", headers=world.auth())
    assert response.status_code == 405
    assert sorted(m.strip() for m in response.headers["Allow"].split(",")) == ["GET", "POST"]
    assert response.json()["error"]["code"] == "method_not_allowed"
