"""Post-commit hooks run off the ingest path: a slow hook never makes ``submit`` wait."""

from __future__ import annotations

import asyncio

from consumers.hooks import HookRunner


async def test_slow_hook_does_not_block_submit_and_drops_oldest() -> None:
    """With the hook stuck, submits return at once, the queue keeps the newest results and counts the dropped."""
    release = asyncio.Event()
    seen: list[int] = []

    async def slow(result: int) -> None:
        await release.wait()
        seen.append(result)

    runner = HookRunner(maxsize=3)
    runner.add(slow)
    for i in range(10):
        runner.submit(i)  # synchronous: cannot wait on the hook
    await asyncio.sleep(0)  # the hook task takes result 0 (or not yet) and blocks
    for i in range(10, 20):
        runner.submit(i)
    release.set()
    await runner.drain()
    await runner.close()
    assert seen[-3:] == [17, 18, 19]
    assert runner.dropped == 20 - len(seen)
    assert runner.dropped > 0


async def test_failing_hook_is_counted_and_later_hooks_still_run() -> None:
    """A hook that raises is logged and counted; the next hook still gets every result."""
    got: list[str] = []

    async def bad(result: str) -> None:
        raise RuntimeError("boom")

    async def good(result: str) -> None:
        got.append(result)

    runner = HookRunner()
    runner.add(bad)
    runner.add(good)
    runner.submit("a")
    runner.submit("b")
    await runner.drain()
    await runner.close()
    assert got == ["a", "b"]
    assert runner.failed == 2
