"""``GET /api/jobs/{id}/family`` on a real server: a job that failed and was retried, a
restart with an edited prompt and a restart with the same settings; readable without any
token, from any member of the family."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import LiveServer
from tests.integration.helpers import create, wait_status


def test_family_tree_attempts_and_prompt_diff(live_server: Callable[..., LiveServer]) -> None:
    server = live_server()
    root = create(server.url, prompt="a lighthouse at dusk [[fail:provider@2]]", steps=4)
    wait_status(server.url, root["id"], {"failed"})
    r = httpx.post(
        f"{server.url}/api/jobs/{root['id']}/retry",
        headers={"Authorization": f"Bearer {root['manage_token']}"},
    )
    assert r.status_code == 202, r.text
    wait_status(server.url, root["id"], {"completed"})
    edited = create(
        server.url, prompt="a red lighthouse at dawn", steps=4, parent_id=root["id"], seed=7
    )
    wait_status(server.url, edited["id"], {"completed"})
    same = create(
        server.url, prompt="a red lighthouse at dawn", steps=4, parent_id=edited["id"], seed=7
    )
    wait_status(server.url, same["id"], {"completed"})
    other = create(server.url, steps=2)  # not in the family

    r = httpx.get(f"{server.url}/api/jobs/{same['id']}/family")  # no token anywhere
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    family = r.json()
    assert "manage_token" not in r.text and root["manage_token"] not in r.text
    assert family["root_id"] == root["id"] and family["job_id"] == same["id"]
    assert not family["truncated"]
    jobs = {j["id"]: j for j in family["jobs"]}
    assert list(jobs) == [root["id"], edited["id"], same["id"]]
    assert other["id"] not in jobs

    first = jobs[root["id"]]
    assert first["depth"] == 0 and first["children"] == [edited["id"]]
    assert [(a["attempt"], a["outcome"], a["error_type"]) for a in first["attempts"]] == [
        (1, "failed", "provider"),
        (2, "completed", None),
    ]
    assert first["change"] is None
    assert first["thumbnail"] == f"/api/jobs/{root['id']}/images/0"

    second = jobs[edited["id"]]
    assert second["depth"] == 1 and second["parent_id"] == root["id"]
    assert second["change"]["kind"] == "edited_prompt"
    ops = second["change"]["prompt"]
    assert "".join(o["text"] for o in ops if o["op"] != "added") == (
        "a lighthouse at dusk [[fail:provider@2]]"
    )
    assert "".join(o["text"] for o in ops if o["op"] != "removed") == "a red lighthouse at dawn"
    assert {"op": "added", "text": " red"} in ops
    assert second["change"]["settings"]["seed"]["to"] == 7

    third = jobs[same["id"]]
    assert third["depth"] == 2
    assert third["change"] == {
        "kind": "same_settings",
        "prompt": None,
        "negative_prompt": None,
        "settings": {},
    }
    assert [a["outcome"] for a in third["attempts"]] == ["completed"]
    assert third["links"]["page"] == f"/jobs/{same['id']}"

    # The same tree from the root; an unknown id is a 404 problem.
    again = httpx.get(f"{server.url}/api/jobs/{root['id']}/family").json()
    assert [j["id"] for j in again["jobs"]] == list(jobs)
    missing = httpx.get(f"{server.url}/api/jobs/nope/family")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_a_running_job_shows_its_current_attempt(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(step_delay_s=0.2)
    job = create(server.url, steps=50)
    wait_status(server.url, job["id"], {"running"})
    family = httpx.get(f"{server.url}/api/jobs/{job['id']}/family").json()
    (member,) = family["jobs"]
    assert [a["outcome"] for a in member["attempts"]] == ["running"]
    assert member["images"] == []


def test_python_client_reads_family_and_deliveries(
    live_server: Callable[..., LiveServer],
) -> None:
    from safelight.client import Client

    server = live_server(webhook_allowed_hosts="127.0.0.1")
    with Client(server.url) as client:
        job = client.create("a kite", steps=2, webhook="http://127.0.0.1:9/hook?k=v")
        assert job.raw["webhook"] == {
            "url": "http://127.0.0.1:9/hook?…",
            "events": ["completed", "failed", "cancelled"],
        }
        child = client.restart(job.id, prompt="a blue kite")
        family = client.family(child.id)
        assert [j["id"] for j in family["jobs"]] == [job.id, child.id]
        assert family["jobs"][1]["change"]["kind"] == "edited_prompt"
        hooks = client.webhook_deliveries(job.id)
        assert hooks["webhook"]["events"] == ["completed", "failed", "cancelled"]
        assert client.webhook_deliveries(child.id)["webhook"] is None
