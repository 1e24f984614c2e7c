"""Keeps the managed vLLM serving: restart on exit or a dead engine, with backoff; give up on a crash loop.

One launch is one ManagedVllm. A launch ends when it fails to start, when its
API server exits, or when /health stops answering 200 (vLLM answers 503 once
its engine has died). Then the supervisor tells the manager at once (so
in-flight requests end empty instead of waiting for a time-out), clears the
old process group, waits (1 s, then doubling: tenacity) and launches again.

Giving up: after `vllm.maxRestarts` restarts in a row where each launch failed
to start or died within `vllm.restartWindowS` of becoming ready (Tabby: restart
after 1 s, give up after 5 failures in 60 s; a streak instead of a plain window
because one vLLM start can take minutes). A launch that served for the whole
window resets the streak. Failures that no retry can fix (model not found,
unknown argument, port taken, no GPU...) give up at once, with the advice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from langserver.backend.diagnosis import Failure, classify
from langserver.backend.keeper import REPLACED, REQUESTED, STOPPED
from langserver.backend.status import Status
from langserver.backend.vllm import STOPPED_ELSEWHERE, LogCallback, ManagedVllm, StatusCallback, WarningCallback
from langserver.settings import Settings

BACKOFF_FIRST_S = 1.0
REJOIN_S = 0.2  # after another window restarted the shared vLLM
BACKOFF_MAX_S = 30.0
# /health: a non-200 answer is re-checked after a second and restarts on the second one;
# no answer at all (time-out, refused) restarts after this many checks in a row.
HEALTH_TIMEOUT_S = 5.0
HEALTH_RECHECK_S = 1.0
HEALTH_BAD_ANSWERS = 2
HEALTH_NO_ANSWERS = 3

UpCallback = Callable[[ManagedVllm], Awaitable[Failure | None]]
DownCallback = Callable[[str], None]
# How a server lets go of the shared vLLM (see ManagedVllm.release and stop):
#   leave      others may go on using it; with nobody left it stops after vllm.idleGraceS
#   leave-now  the same, but with nobody left it stops now (a settings change: free the GPU first)
#   stop       stop it for everyone (Restart Model; a launch that failed)
#   exit       leave, as this server exits without stop(): a stop it causes is quick
#   stop-model the user's Stop Model: stop it for everyone, and the others stay stopped
StopMode = Literal["leave", "leave-now", "stop", "exit", "stop-model"]


class LaunchEnded(Exception):
    """One launch is over (it failed to start, exited, or its engine died)."""

    def __init__(self, failure: Failure, lines: list[str]) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.lines = lines


class Supervisor:
    def __init__(self, settings: Settings, on_status: StatusCallback, on_log: LogCallback,
                 on_warning: WarningCallback, on_up: UpCallback, on_down: DownCallback) -> None:
        self.settings = settings
        self._on_status = on_status
        self._on_log = on_log
        self._on_warning = on_warning
        self._on_up = on_up
        self._on_down = on_down
        self.vllm: ManagedVllm | None = None
        self.restarts = 0  # launches after the first one
        self.streak = 0  # failures in a row that count towards giving up
        self.gave_up: Failure | None = None
        self.last_failure: Failure | None = None
        self.last_recovery_s: float | None = None  # from the last failure to ready again
        self._failed_at: float | None = None
        self._settled = asyncio.Event()  # first ready, gave up, or stopped
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_mode: StopMode = "leave"

    # --- public ---------------------------------------------------------------------------------
    def update(self, settings: Settings) -> None:
        """Supervision knobs changed: the next check and launch use them; the running vLLM stays."""
        self.settings = settings
        if self.vllm is not None:
            self.vllm.update(settings)

    @property
    def active(self) -> bool:
        """Serving, loading or about to retry: not given up, not stopped."""
        return self._task is not None and not self._task.done() and not self._stopping

    def launch(self) -> None:
        """Start supervising in the background; `settled` tells when the first launch is decided."""
        self._task = asyncio.create_task(self._run(), name="vllm-supervisor")

    async def settled(self) -> None:
        """Return once vLLM serves, or the supervisor has given up or been stopped."""
        assert self._task is not None
        waiter = asyncio.create_task(self._settled.wait())
        try:
            await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def start(self) -> None:
        self.launch()
        await self.settled()

    async def stop(self, mode: StopMode = "leave", report: bool = True) -> None:
        """`report`: publish "stopped" (the manager says something more precise itself otherwise)."""
        self._stopping = True
        self._stop_mode = mode
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.vllm is not None:  # cancelled before the launch's own clean-up ran
            await _let_go(self.vllm, mode)
            self.vllm = None
        if report:
            self._on_status(Status("stopped", "vLLM stopped" if mode == "stop" else "stopped using vLLM"))

    # --- the loop -------------------------------------------------------------------------------
    async def _run(self) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(LaunchEnded),
            stop=self._give_up_now,
            wait=self._backoff,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._serve_once()
        except LaunchEnded as ended:
            self._give_up(ended)
        finally:
            self._settled.set()

    async def _serve_once(self) -> None:
        """One launch, from start to its end; returns only when asked to stop."""
        detail: dict[str, object] = {"restarts": self.restarts}
        if self.last_failure is not None:
            detail["lastFailure"] = self.last_failure.message
        vllm = ManagedVllm(self.settings, self._on_status, self._on_log, self._on_warning, detail)
        self.vllm = vllm
        mode: StopMode = "stop"  # a launch that ended is cleared for everyone (a no-op if it is gone)
        try:
            if not await vllm.start():
                if self._stopping:
                    return
                failure = vllm.failure or Failure("vLLM did not start.")
                raise LaunchEnded(failure, list(vllm.tail))
            problem = await self._on_up(vllm)
            if problem is not None:
                raise LaunchEnded(problem, list(vllm.tail))
            ready_at = time.monotonic()
            if self._failed_at is not None:
                self.last_recovery_s = ready_at - self._failed_at
                self._failed_at = None
            self._settled.set()
            failure = await self._watch(vllm)
            # Served long enough: this failure starts a new streak.
            if time.monotonic() - ready_at >= self.settings.vllm.restart_window_s:
                self.streak = 0
            raise LaunchEnded(failure, list(vllm.tail))
        except LaunchEnded as ended:
            if ended.failure.stopped:
                self._on_down(ended.failure.message)
                raise
            self._failed_at = self._failed_at or time.monotonic()
            if not ended.failure.expected:
                self.streak += 1
            self.last_failure = ended.failure
            # In-flight requests end now, not when the old group is finally gone.
            self._on_down(ended.failure.message)
            if not self._stopping and not self._hopeless(ended.failure):
                # Say so now: clearing the old process group can take seconds.
                self._announce_restart(ended)
            raise
        except asyncio.CancelledError:
            # Without stop() (the finally takes stop()'s mode): the server is exiting.
            mode = "exit"
            raise
        finally:
            if self._stopping:
                mode = self._stop_mode
            await _let_go(vllm, mode)
            if self.vllm is vllm:
                self.vllm = None

    async def _watch(self, vllm: ManagedVllm) -> Failure:
        """Wait for the launch to end: exit, or /health failing. Returns why."""
        interval = self.settings.vllm.health_interval_s
        assert vllm.launch is not None
        url = vllm.launch.base_url + "/health"
        bad_answers = no_answers = 0
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S) as http:
            while True:
                wait = HEALTH_RECHECK_S if bad_answers else interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(vllm.exited.wait(), wait)
                if vllm.exited.is_set():
                    return self._exit_failure(vllm)
                try:
                    answer = await http.get(url)
                except httpx.HTTPError as err:
                    if vllm.exited.is_set():
                        return self._exit_failure(vllm)
                    no_answers += 1
                    if no_answers >= HEALTH_NO_ANSWERS:
                        return Failure(f"vLLM stopped answering /health ({type(err).__name__}, "
                                       f"{no_answers} checks in a row)")
                    continue
                no_answers = 0
                if answer.status_code == 200:
                    bad_answers = 0
                    continue
                bad_answers += 1
                if bad_answers >= HEALTH_BAD_ANSWERS:
                    why = " (engine dead)" if answer.status_code == 503 else ""
                    return Failure(f"vLLM's /health answered {answer.status_code}{why}")

    def _exit_failure(self, vllm: ManagedVllm) -> Failure:
        if vllm.ended_by == STOPPED:
            return Failure(STOPPED_ELSEWHERE, stopped=True)
        if vllm.ended_by in (REQUESTED, REPLACED):
            return Failure("another window restarted or stopped the shared vLLM", expected=True)
        code = vllm.exit_code
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        message = f"vLLM {how}"
        diagnosis = classify(list(vllm.tail)[-30:])
        if diagnosis.permanent:  # e.g. out of memory at run time: say what the log says
            message += f": {diagnosis.advice}"
        return Failure(message, exit_code=code)

    # --- tenacity hooks and what they tell the user ---------------------------------------------
    def _hopeless(self, failure: Failure | None) -> bool:
        return (failure is None or failure.permanent or failure.stopped
                or self.streak > self.settings.vllm.max_restarts)

    def _give_up_now(self, state: RetryCallState) -> bool:
        return self._stopping or self._hopeless(self._failure_of(state))

    def _backoff(self, state: RetryCallState | None = None) -> float:
        if self.last_failure is not None and self.last_failure.expected:
            return REJOIN_S
        return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** max(0, self.streak - 1)))

    def _announce_restart(self, ended: LaunchEnded) -> None:
        failure = ended.failure
        delay = self._backoff()
        self.restarts += 1
        if failure.expected:
            self._on_log(f"{failure.message}; joining or starting it again")
            self._on_status(Status("starting", f"{failure.message}; joining it again",
                                   {"restarts": self.restarts, "reason": failure.message}))
            return
        self._on_log(f"{failure.message}; restarting in {delay:g} s (restart {self.streak} of at most "
                     f"{self.settings.vllm.max_restarts} in a row)")
        detail: dict[str, object] = {"restarts": self.restarts, "reason": failure.message, "retryInS": delay,
                                     "lastLines": ended.lines[-20:]}
        if failure.exit_code is not None:
            detail["exitCode"] = failure.exit_code
        self._on_status(Status("starting", f"{failure.message}; restarting in {delay:g} s", detail))

    def _give_up(self, ended: LaunchEnded) -> None:
        if self._stopping:
            return
        failure = ended.failure
        self.gave_up = failure
        if failure.stopped:
            self._on_log(failure.message)
            self._on_status(Status("stopped", failure.message, {"stoppedBy": "another window"}))
            return
        if failure.permanent:
            message = failure.message
        else:
            message = (f"vLLM failed {self.streak} times in a row, not restarting again "
                       f"(vllmGhost.vllm.maxRestarts): {failure.message}. "
                       "Fix the cause, then run 'vLLM Ghost: Restart Model'.")
        detail: dict[str, object] = {"restarts": self.restarts, "failures": self.streak,
                                     "lastLines": ended.lines[-20:]}
        if failure.exit_code is not None:
            detail["exitCode"] = failure.exit_code
        self._on_status(Status("error", message, detail))

    @staticmethod
    def _failure_of(state: RetryCallState) -> Failure | None:
        error = state.outcome.exception() if state.outcome is not None else None
        return error.failure if isinstance(error, LaunchEnded) else None


async def _let_go(vllm: ManagedVllm, mode: StopMode) -> None:
    if mode in ("stop", "stop-model"):
        await vllm.stop(report=False, by_user=mode == "stop-model")
    else:
        await vllm.release(stop_if_last=mode == "leave-now", graceful=mode != "exit")
