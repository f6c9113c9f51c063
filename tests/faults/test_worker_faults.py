"""Killed, crashed, stopped, slow and out-of-memory workers: no job lost, none run twice."""

from __future__ import annotations

import signal
import time

import httpx
import psutil
from kombu import Connection

from sam2fleet.shared.queue import SEGMENT_TASK
from sam2fleet.shared.records import JobRecord, Keys
from sam2fleet.shared.settings import Settings
from tests.faults.conftest import FAULT_ENV, FaultFleet, kill
from tests.system.client import run, submit, wait

SETTINGS = Settings(**{k.removeprefix("SAM2FLEET_").lower(): v for k, v in FAULT_ENV.items()})
VISIBILITY_TIMEOUT_S = SETTINGS.visibility_timeout_s
# Redis times a message's visibility from when the worker took it, a moment before
# the job's `started_at`, and a ready process takes a waiting job a moment after it
# is ready: this much of a moment is allowed for, either way.
MOMENT_S = 2.0


def _terminal_attempts(f: FaultFleet, job_id: str) -> int:
    """Attempts to write the job's outcome, accepted or refused: a job that ran to the
    end twice shows 2 here although Redis kept only one result."""
    record = JobRecord.from_redis(f.redis.hgetall(Keys(f.prefix).job(job_id)))
    assert record is not None, job_id
    return record.terminal_attempts


def test_sigkill_of_the_model_process_requeues_the_job_at_once(faulty: FaultFleet) -> None:
    pid = faulty.model_pid()
    job = submit(faulty.base_url, faulty.job_body("sleep:2"))
    faulty.wait_status(job["id"], "running")
    kill(pid)
    replaced_at = faulty.wait_new_model_process(pid)  # the pool replaced the dead process
    done = wait(faulty.base_url, job["id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2  # one delivery died, the requeued one finished
    assert _terminal_attempts(faulty, job["id"]) == 1
    # At once: the message went back to the queue when the process died, so the
    # next process started the job as soon as it was ready, not when the visibility
    # timeout (the only other way back) had passed.
    assert done["started_at"] - replaced_at < MOMENT_S, done["started_at"] - replaced_at


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(
    faulty: FaultFleet,
) -> None:
    job = submit(faulty.base_url, faulty.job_body("crash"))
    done = wait(faulty.base_url, job["id"], timeout=90)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "worker_crashed"
    assert done["attempts"] == 3
    faulty.wait_ready()
    assert run(faulty.base_url, faulty.job_body())["status"] == "succeeded"


def test_sigterm_mid_job_lets_the_job_finish(faulty: FaultFleet) -> None:
    job = submit(faulty.base_url, faulty.job_body("sleep:2"))
    faulty.wait_status(job["id"], "running")
    supervisor = faulty.procs["w0"]
    supervisor.send_signal(signal.SIGTERM)  # Celery's warm shutdown
    done = wait(faulty.base_url, job["id"], timeout=60)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert supervisor.wait(timeout=30) == 0
    faulty.restart_worker()


def test_sigkill_of_the_whole_worker_requeues_its_job_once_its_heartbeats_stop(
    faulty: FaultFleet,
) -> None:
    job = submit(faulty.base_url, faulty.job_body("sleep:2"))
    faulty.wait_status(job["id"], "running")
    supervisor = psutil.Process(faulty.procs["w0"].pid)
    victims = [supervisor, *supervisor.children(recursive=True)]
    for p in victims:
        p.kill()
    killed_at = time.time()
    psutil.wait_procs(victims, timeout=10)
    faulty.restart_worker()
    ready_after = time.time() - killed_at
    done = wait(faulty.base_url, job["id"], timeout=90)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2 and _terminal_attempts(faulty, job["id"]) == 1
    # Nothing told Redis that this worker died, and its message stayed unacknowledged;
    # but its heartbeats stopped: once they had expired (the supervisor's too), the new
    # worker's heartbeat loop put the message back in the queue (worker/takeover.py).
    # So the job ran again a heartbeat TTL + one beat after the kill (or once the new
    # worker was ready, if later), long before the visibility timeout.
    ttl = float(faulty.env["SAM2FLEET_HEARTBEAT_TTL_S"])
    beat = float(faulty.env["SAM2FLEET_HEARTBEAT_INTERVAL_S"])
    redelivered_after = done["started_at"] - killed_at
    assert redelivered_after < max(ttl + beat, ready_after) + MOMENT_S, (
        redelivered_after,
        ready_after,
    )
    assert redelivered_after < VISIBILITY_TIMEOUT_S - MOMENT_S


def test_soft_time_limit_fails_with_timeout_and_the_next_job_is_served(faulty: FaultFleet) -> None:
    job = submit(faulty.base_url, faulty.job_body("sleep:11"))  # soft limit is 10 s
    done = wait(faulty.base_url, job["id"], timeout=60)
    assert done["status"] == "failed" and done["error"]["type"] == "timeout"
    assert run(faulty.base_url, faulty.job_body())["status"] == "succeeded"


def test_hard_time_limit_fails_with_timeout_and_replaces_the_process(faulty: FaultFleet) -> None:
    pid = faulty.model_pid()
    job = submit(faulty.base_url, faulty.job_body("stuck:30"))  # ignores the soft limit
    done = wait(faulty.base_url, job["id"], timeout=90)
    assert done["status"] == "failed" and done["error"]["type"] == "timeout"
    assert "hard time limit" in done["error"]["message"]
    assert done["finished_at"] - done["started_at"] < 25  # the 14 s hard limit, not 30 s
    faulty.wait_ready()
    assert run(faulty.base_url, faulty.job_body())["status"] == "succeeded"
    assert faulty.model_pid() != pid


def test_out_of_memory_is_retried_with_less_work(faulty: FaultFleet) -> None:
    knobs = {
        "points_per_side": 4,
        "points_per_batch": 64,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    }
    image, image_id = faulty.image("oom_above:16")
    retried = run(faulty.base_url, {"image": image, "mode": "auto", "auto": knobs})
    notes = [n for n in retried["result"]["notes"] if "out of memory" in n]
    assert notes[-1].endswith("points_per_batch=16") and len(notes) == 2  # 64 -> 32 -> 16
    # Less work in flight, same masks as a run that never ran out of memory.
    faulty.redis.delete(f"{faulty.prefix}:fault:{image_id}")
    clean = run(faulty.base_url, {"image": image, "mode": "auto", "auto": knobs})
    assert clean["result"]["masks"]
    assert [m["segmentation"] for m in retried["result"]["masks"]] == [
        m["segmentation"] for m in clean["result"]["masks"]
    ]


def test_out_of_memory_every_time_fails_as_input_too_large(faulty: FaultFleet) -> None:
    pid = faulty.model_pid()
    job = wait(faulty.base_url, submit(faulty.base_url, faulty.job_body("oom"))["id"])
    assert job["status"] == "failed" and job["error"]["type"] == "input_too_large"
    assert faulty.model_pid() == pid  # out of memory is survivable: same process
    assert run(faulty.base_url, faulty.job_body())["status"] == "succeeded"


def test_a_cuda_error_replaces_the_process_and_the_job_is_redone(faulty: FaultFleet) -> None:
    pid = faulty.model_pid()
    done = wait(
        faulty.base_url,
        submit(faulty.base_url, faulty.job_body("cuda_error_once"))["id"],
        timeout=90,
    )
    assert done["status"] == "succeeded" and done["attempts"] == 2
    faulty.wait_ready()
    assert faulty.model_pid() != pid


def test_cancel_queued_job_never_runs_and_running_job_stops(faulty: FaultFleet) -> None:
    running = submit(faulty.base_url, faulty.job_body("sleep:2"))
    queued = submit(faulty.base_url, faulty.job_body())
    faulty.wait_status(running["id"], "running")
    r = httpx.delete(f"{faulty.base_url}/v1/jobs/{queued['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = httpx.delete(f"{faulty.base_url}/v1/jobs/{running['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    after = run(faulty.base_url, faulty.job_body())  # served once both are out of the way
    assert after["status"] == "succeeded"
    stopped = httpx.get(f"{faulty.base_url}/v1/jobs/{running['id']}").json()
    never = httpx.get(f"{faulty.base_url}/v1/jobs/{queued['id']}").json()
    assert stopped["status"] == "cancelled" and "result" not in stopped
    assert _terminal_attempts(faulty, running["id"]) == 0  # stopped: wrote no outcome
    assert faulty.redis.exists(Keys(faulty.prefix).result(running["id"])) == 0
    assert never["status"] == "cancelled" and never["attempts"] == 0
    assert _terminal_attempts(faulty, queued["id"]) == 0
    assert never.get("started_at") is None


def test_queue_cap_answers_503_with_retry_after(faulty: FaultFleet) -> None:
    blocker = submit(faulty.base_url, faulty.job_body("sleep:3"))
    faulty.wait_status(blocker["id"], "running")
    answers = [
        httpx.post(f"{faulty.base_url}/v1/jobs", json=faulty.job_body(), timeout=10)
        for _ in range(5)
    ]
    codes = [a.status_code for a in answers]
    assert codes[:3] == [202, 202, 202] and codes[3:] == [503, 503], codes
    assert answers[3].json()["error"]["type"] == "queue_full"
    assert int(answers[3].headers["retry-after"]) > 0
    for a in [blocker, *[a.json() for a in answers[:3]]]:
        assert wait(faulty.base_url, a["id"], timeout=90)["status"] == "succeeded"


def test_a_pickled_message_is_refused_never_executed(faulty: FaultFleet) -> None:
    job = submit(faulty.base_url, faulty.job_body("sleep:1"))
    wait(faulty.base_url, job["id"])
    # A crafted pickle message naming the task: a worker that executed it would
    # restart the (finished) job or worse; it must be dropped unread.
    queue = Keys(faulty.prefix).queue("sam2.1_hiera_tiny")
    with Connection(faulty.env["SAM2FLEET_REDIS_URL"]) as conn:
        producer = conn.Producer(serializer="pickle")
        producer.publish(
            {"task": SEGMENT_TASK},
            routing_key=queue,
            headers={"task": SEGMENT_TASK, "id": "evil", "argsrepr": ""},
            serializer="pickle",
            declare=[],
        )
    deadline = time.monotonic() + 30
    while faulty.redis.llen(queue) or "untrusted content" not in faulty.log("w0").lower():
        assert time.monotonic() < deadline, f"not taken and refused:\n{faulty.log('w0')}"
        time.sleep(0.1)
    # Dropped, not held for redelivery to another worker, and never run.
    assert not any(b"evil" in m for m in faulty.redis.hvals("unacked")), "kept for redelivery"
    assert "[evil]" not in faulty.log("w0")
    assert run(faulty.base_url, faulty.job_body())["status"] == "succeeded"


def test_jobs_taken_into_a_batch_survive_the_death_of_their_worker(faulty: FaultFleet) -> None:
    # One job holds the worker; three queue behind it. The next task takes the first
    # of them and batches the other two (out of the Celery queue, into the worker's
    # in-flight list), then the first sleeps at its safe point and the process dies.
    holder = submit(faulty.base_url, faulty.job_body("sleep:1"))
    faulty.wait_status(holder["id"], "running")
    first = submit(faulty.base_url, faulty.job_body("sleep:3"))
    others = [submit(faulty.base_url, faulty.job_body()) for _ in range(2)]
    for job in [first, *others]:
        faulty.wait_status(job["id"], "running")  # the two others: started by the batch
    inflight = [k for k in faulty.redis.scan_iter(f"{faulty.prefix}:inflight:*")]
    assert [faulty.redis.llen(k) for k in inflight] == [2]
    kill(faulty.model_pid())
    for job in [first, *others]:
        done = wait(faulty.base_url, job["id"], timeout=90)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2  # the batch's delivery died; the next one finished
        assert _terminal_attempts(faulty, job["id"]) == 1
    assert faulty.redis.llen(inflight[0]) == 0
    faulty.wait_ready()


def test_a_time_limit_mid_batch_fails_that_job_and_requeues_the_rest(
    faulty: FaultFleet,
) -> None:
    holder = submit(faulty.base_url, faulty.job_body("sleep:1"))
    faulty.wait_status(holder["id"], "running")
    slow = submit(faulty.base_url, faulty.job_body("sleep:30"))  # past the 10 s soft limit
    others = [submit(faulty.base_url, faulty.job_body()) for _ in range(2)]
    timed_out = wait(faulty.base_url, slow["id"], timeout=60)
    assert timed_out["status"] == "failed" and timed_out["error"]["type"] == "timeout"
    for job in others:
        done = wait(faulty.base_url, job["id"], timeout=60)
        # Taken into the slow job's batch (attempt 1), given back unrun when its time
        # ran out, then run on their own (attempt 2).
        assert done["status"] == "succeeded" and done["attempts"] == 2, done
        assert _terminal_attempts(faulty, job["id"]) == 1
    assert "batched with 2 more prompt job(s)" in faulty.log("w0")
