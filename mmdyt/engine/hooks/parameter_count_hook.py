"""ParameterCountHook: logs total and trainable parameters at start-up."""
from mmengine.hooks import Hook

from mmdyt.registry import register
from ..rate_meter import unwrap_model


def count_parameters(model) -> dict:
    """Total and trainable parameters of ``model`` and of its backbone."""
    model = unwrap_model(model)
    counts = {}
    parts = [('model', model)]
    if hasattr(model, 'backbone'):
        parts.append(('backbone', model.backbone))
    for name, module in parts:
        params = list(module.parameters())
        counts[name] = (sum(p.numel() for p in params),
                        sum(p.numel() for p in params if p.requires_grad))
    return counts


@register('HOOKS')
class ParameterCountHook(Hook):
    """Logs the total and trainable parameters before training starts."""

    priority = 'LOW'

    def before_train(self, runner) -> None:
        for name, (total, trainable) in count_parameters(
                runner.model).items():
            runner.logger.info(
                f'{name} parameters: {total / 1e6:.2f}M total, '
                f'{trainable / 1e6:.3f}M trainable '
                f'({100 * trainable / max(total, 1):.2f}%)')
