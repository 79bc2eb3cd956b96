from .args import (check_arguments, check_call_arguments,
                   suggest_unknown_arguments)

__all__ = [
    'check_arguments', 'check_call_arguments', 'suggest_unknown_arguments'
]
