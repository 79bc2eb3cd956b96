"""Clear errors for misspelt config arguments: name them, suggest the fix."""
import difflib
import functools
import inspect
from typing import Callable, Iterable, List, Optional, Tuple, Type, TypeVar

T = TypeVar('T')


def _signature_keywords(fn: Callable) -> Tuple[List[str], bool]:
    """The keyword arguments ``fn`` names, and whether it takes
    ``**kwargs``."""
    names, var_keyword = [], False
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                            inspect.Parameter.KEYWORD_ONLY) and name != 'self':
            names.append(name)
    return names, var_keyword


def _keyword_names(fn: Callable) -> Optional[List[str]]:
    """Keyword arguments ``fn`` accepts; None if it takes ``**kwargs``."""
    names, var_keyword = _signature_keywords(fn)
    return None if var_keyword else names


def check_arguments(owner: str,
                    given: Iterable[str],
                    valid: Iterable[str],
                    what: str = 'argument') -> None:
    """Raise a TypeError naming the arguments in ``given`` that are not in
    ``valid``, each with the closest valid name (difflib) if there is one.

    Args:
        owner (str): What takes the arguments, for the message (e.g.
            ``'DyTViT'`` or ``"DyTViT's adapter_cfg (Adapter)"``).
        given (Iterable[str]): The argument names of the config.
        valid (Iterable[str]): The names ``owner`` accepts.
        what (str): What the names are, for the message.
            Defaults to ``'argument'``.

    Raises:
        TypeError: If an argument is unknown.

    Examples:
        >>> check_arguments('DyTViT', ['dispach'], ['dispatch', 'arch'])
        Traceback (most recent call last):
        ...
        TypeError: DyTViT got an unknown argument 'dispach' (did you mean \
'dispatch'?); valid arguments: arch, dispatch
    """
    valid = list(valid)
    unknown = [name for name in given if name not in valid]
    if not unknown:
        return
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        problems.append(f'{name!r}' +
                        (f' (did you mean {close[0]!r}?)' if close else ''))
    unknowns = f'unknown {what}s' if len(unknown) > 1 else \
        f'an unknown {what}'
    raise TypeError(f'{owner} got {unknowns} {", ".join(problems)}; '
                    f'valid {what}s: {", ".join(sorted(valid))}')


def check_call_arguments(owner: str, fn: Callable, given: Iterable[str],
                         filled: Iterable[str] = ()) -> None:
    """:func:`check_arguments` against the signature of ``fn`` (a class's
    ``__init__`` or a function); ``filled`` are arguments the caller sets
    itself, which the config must not name. Functions with ``**kwargs``
    accept anything."""
    names = _keyword_names(fn)
    if names is None:
        return
    check_arguments(owner, given, [n for n in names if n not in set(filled)])


def _constructor_keyword_names(cls: type) -> Optional[List[str]]:
    """Keyword arguments the constructor of ``cls`` accepts, following
    ``**kwargs`` that are passed on to the base classes' constructors (the
    OpenMMLab pattern ``def __init__(self, extra, **kwargs)``); None if the
    chain ends in a constructor that accepts anything."""
    names: List[str] = []
    for klass in cls.__mro__:
        init = vars(klass).get('__init__')
        if init is None:
            continue
        if klass is object:
            return None
        own, var_keyword = _signature_keywords(
            getattr(init, '__wrapped__', init))
        names += own
        if not var_keyword:
            return names
    return None


def suggest_unknown_arguments(cls: Type[T]) -> Type[T]:
    """Class decorator: an unknown keyword argument of the constructor
    raises a TypeError that names it and suggests the closest valid one,
    instead of Python's bare ``unexpected keyword argument``. Arguments
    that the constructor passes on through ``**kwargs`` to its base class
    are checked against the base class's constructor."""
    init = cls.__init__
    valid = _constructor_keyword_names(cls)  # once, when the class is made
    if valid is None:
        return cls

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        check_arguments(cls.__name__, kwargs, valid)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls
