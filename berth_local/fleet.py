"""Several Lambda instances behind the local gateway: worker processes sharing nothing but moto.

In a deployment API Gateway spreads requests over warm Lambda instances. Each has its own memory
(clients, caches, anything a module keeps) and runs one invocation at a time, and consecutive
chunks of one upload may each land on a different one. `BERTH_INSTANCES=N make run` reproduces
that: the gateway hands every invocation (the app's proxy event, or an authorizer's event) to one
of N worker processes, picked at random among the idle ones, and waits for its answer. With the
aws gateway mode, an invocation that outlives the integration timeout keeps its worker busy until
it ends, as a Lambda instance stays busy after API Gateway gave up.

Workers are started with the `spawn` method, so they inherit the environment (moto's endpoint,
the token key) but no state of the gateway process.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import random
import threading
from multiprocessing.connection import Connection
from typing import Any, Optional

log = logging.getLogger(__name__)


class InvocationTimeout(Exception):
    """The worker did not answer within the timeout (it goes on, and stays busy until done)."""


class InvocationFailed(Exception):
    """The handler raised; the message is the Lambda error message (e.g. "Unauthorized")."""


def _resolve(handler: str) -> Any:
    """`module.attribute`, as a Lambda handler string names it."""
    module, _, attribute = handler.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


STATS = "__aws_calls__"   # a message asking a worker for (and resetting) its AWS call counts


def _count_aws_calls() -> "dict[tuple, int]":
    """Count this process's AWS calls by (service, operation, S3 key prefix): the fleet's
    workers answer STATS with them, so tests and benchmarks can see what each instance did."""
    from collections import Counter
    from botocore.client import BaseClient
    counts: Counter = Counter()
    original = BaseClient._make_api_call

    def counting(self, operation_name, api_params):
        key = api_params.get("Key") if isinstance(api_params, dict) else None
        prefix = "/".join(key.split("/")[:2]) + "/" if isinstance(key, str) and "/" in key else None
        counts[(self.meta.service_model.service_name, operation_name, prefix)] += 1
        return original(self, operation_name, api_params)
    BaseClient._make_api_call = counting
    return counts


def _worker_main(conn: Connection, app_handler: str, index: int) -> None:
    os.environ["BERTH_INSTANCE"] = str(index)
    from berth_local.gateway import make_context
    counts = _count_aws_calls()
    app = _resolve(app_handler)
    handlers: dict[str, Any] = {app_handler: app}
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        handler, event = message
        if handler == STATS:
            conn.send(("ok", dict(counts)))
            counts.clear()
            continue
        try:
            function = handlers.get(handler) or handlers.setdefault(handler, _resolve(handler))
            result = function(event, make_context(handler.rpartition(".")[2]))
            conn.send(("ok", result))
        except Exception as exc:   # a failed invocation: Lambda reports the message only
            conn.send(("error", str(exc)))
        finally:
            if hasattr(app, "current_request"):
                app.current_request = None


class _Worker:
    def __init__(self, context, app_handler: str, index: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, app_handler, index),
                                       name=f"berth-instance-{index}", daemon=True)
        self.process.start()
        child.close()
        self.index = index


class Fleet:
    """N worker processes; `invoke(handler, event, timeout)` runs one invocation on an idle one."""

    def __init__(self, size: int, app_handler: str = "app.app") -> None:
        if size < 1:
            raise ValueError("a fleet needs at least one instance")
        context = multiprocessing.get_context("spawn")
        self.app_handler = app_handler
        self._workers = [_Worker(context, app_handler, i) for i in range(size)]
        self._idle = list(self._workers)
        self._cond = threading.Condition()
        self.invocations = [0] * size

    @property
    def size(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    def _take(self) -> _Worker:
        with self._cond:
            while not self._idle:
                self._cond.wait()
            worker = self._idle.pop(random.randrange(len(self._idle)))
            self.invocations[worker.index] += 1
            return worker

    def _give_back(self, worker: _Worker) -> None:
        with self._cond:
            self._idle.append(worker)
            self._cond.notify()

    def invoke(self, event: dict, handler: Optional[str] = None, timeout: Optional[float] = None) -> Any:
        worker = self._take()
        try:
            worker.conn.send((handler or self.app_handler, event))
        except OSError:
            self._give_back(worker)
            raise
        if timeout is not None and not worker.conn.poll(timeout):
            threading.Thread(target=self._finish_late, args=(worker,), daemon=True).start()
            raise InvocationTimeout()
        return self._result(worker)

    def _result(self, worker: _Worker) -> Any:
        try:
            status, value = worker.conn.recv()
        finally:
            self._give_back(worker)
        if status == "error":
            raise InvocationFailed(value)
        return value

    def _finish_late(self, worker: _Worker) -> None:
        try:
            self._result(worker)
        except Exception:
            pass

    def aws_calls(self) -> "dict[tuple, int]":
        """AWS calls made by all instances since the last call: {(service, op, key prefix): n}.
        Waits for every instance to be idle (it asks each in turn)."""
        from collections import Counter
        total: Counter = Counter()
        with self._cond:
            while len(self._idle) < len(self._workers):
                self._cond.wait()
            for worker in self._workers:
                worker.conn.send((STATS, None))
                total.update(worker.conn.recv()[1])
        return dict(total)

    def close(self) -> None:
        for worker in self._workers:
            worker.conn.close()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
