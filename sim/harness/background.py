"""One background coroutine that a monitor, a sink or the time skipper owns: started once,
cancelled by stop (cocotbext-axi's ``start``/``stop`` shape)."""

import cocotb

__all__ = ["Background"]


class Background:
    """A component whose work is ``async def _run(self)``, run as one task.

    :meth:`start` starts it if it is not running (calling it twice starts one task) and returns
    the component; :meth:`stop` cancels it (nothing if it is not running)."""

    _task = None

    async def _run(self):
        raise NotImplementedError

    def start(self):
        if self._task is None:
            self._task = cocotb.start_soon(self._run())
        return self

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None
