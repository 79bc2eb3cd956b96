"""A hook that kills its own training process (SIGKILL) at a given
iteration, or while the checkpoint of that iteration is being written: the
crashes a resumed run must survive. Imported by configs through
``custom_imports``."""
import os
import signal

from mmengine.hooks import Hook

from mmdyt.registry import register


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@register('HOOKS')
class KillHook(Hook):
    """Kill the process after training iteration ``iteration`` (1-based), or,
    with ``during_save``, half-way through writing that iteration's
    checkpoint (the file is left truncated)."""

    priority = 'LOWEST'

    def __init__(self, iteration: int, during_save: bool = False):
        self.iteration = iteration
        self.during_save = during_save

    def before_train(self, runner) -> None:
        if not self.during_save:
            return
        import mmengine.runner.runner as runner_module
        original = runner_module.save_checkpoint
        target = f'iter_{self.iteration}.pth'

        def save_then_die(checkpoint, filename, *args, **kwargs):
            if not filename.endswith(target):
                return original(checkpoint, filename, *args, **kwargs)
            original(checkpoint, filename, *args, **kwargs)
            with open(filename, 'rb') as file:
                data = file.read()
            with open(filename, 'wb') as file:  # as if cut off mid-write
                file.write(data[:len(data) // 2])
            _die()

        runner_module.save_checkpoint = save_then_die

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not self.during_save and runner.iter + 1 == self.iteration:
            _die()
