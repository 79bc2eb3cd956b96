"""Image loading that reports unreadable files instead of failing obscurely."""
import io
import logging
from typing import Optional

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmengine import fileio
from mmengine.logging import print_log
from PIL import Image

from mmdyt.registry import register

#: What :class:`CheckedLoadImageFromFile` does with an unreadable image.
ON_ERROR = ('skip', 'raise')
#: Bytes at the end of a JPEG file searched for its end-of-image marker.
JPEG_TAIL = 4096


def check_image_bytes(data: bytes) -> Optional[str]:
    """What is wrong with the bytes of an image file, or None.

    Catches what decoders do not report: an empty file, and a JPEG cut short
    (OpenCV decodes it partially, filling the rest, with only a warning on
    stderr). Undecodable data is found by decoding.
    """
    if not data:
        return 'the file is empty (0 bytes)'
    if data[:2] == b'\xff\xd8' and b'\xff\xd9' not in data[-JPEG_TAIL:]:
        return 'the JPEG is truncated (no end-of-image marker)'
    return None


def identify_image(data: bytes) -> Optional[str]:
    """What is wrong with the bytes of an image file, or None, without
    decoding its pixels: :func:`check_image_bytes`, then Pillow's header and
    structure check (undecodable data, an unknown format)."""
    problem = check_image_bytes(data)
    if problem is not None:
        return problem
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:  # noqa: BLE001 - any failure means unreadable
        return 'it cannot be decoded as an image'
    return None


@register('TRANSFORMS')
class CheckImageFile(BaseTransform):
    """Stop, naming the file, at an image file that cannot be read right.

    Placed before mmcv's ``LoadImageFromFile`` in a test pipeline, it turns
    what the decoder would miss or report obscurely (an empty file, a JPEG
    cut short that OpenCV decodes partially, data that is not an image) into
    a ValueError naming the file. The loading itself stays the standard
    ``LoadImageFromFile``, which the libraries' inferencers
    (``MMSegInferencer``) look for and replace; the path an inferencer
    feeds the pipeline is checked too, arrays pass unchanged.

    Args:
        backend_args (dict, optional): File backend arguments, as for
            ``LoadImageFromFile``. Defaults to None.

    Examples:
        >>> test_pipeline = [
        ...     dict(type='CheckImageFile'),
        ...     dict(type='LoadImageFromFile'),
        ...     dict(type='LoadAnnotations', reduce_zero_label=True),
        ...     dict(type='PackSegInputs')]
    """

    def __init__(self, backend_args: Optional[dict] = None):
        self.backend_args = backend_args

    def transform(self, results):
        """Check ``results['img_path']`` and return ``results`` unchanged.

        An inferencer feeds its raw input (a path or an array) to the
        pipeline's first step: a path is checked, an array passes.
        """
        if isinstance(results, str):
            self._check(results)
        elif isinstance(results, dict) and results.get('img') is None and \
                results.get('img_path') is not None:
            self._check(results['img_path'])
        return results

    def _check(self, filename: str) -> None:
        try:
            data = fileio.get(filename, backend_args=self.backend_args)
        except Exception as error:  # noqa: BLE001 - re-raised with context
            raise ValueError(f'unreadable image {filename}: it cannot be '
                             f'read ({type(error).__name__}: {error})'
                             ) from error
        problem = identify_image(data)
        if problem is not None:
            raise ValueError(f'unreadable image {filename}: {problem}')


@register('TRANSFORMS')
class CheckedLoadImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` that deals with unreadable images.

    An empty, truncated or undecodable image file (or one that cannot be
    read) is, with ``on_error='skip'`` (training pipelines), logged as a
    warning naming the file and skipped: the transform returns None and
    mmengine's ``BaseDataset`` (not in ``test_mode``) fetches another
    sample. With ``on_error='raise'`` (validation and test pipelines, where
    replacing a sample would change the metric silently) it raises a
    ValueError naming the file and the problem.

    Args:
        on_error (str): ``'skip'`` or ``'raise'``. Defaults to ``'skip'``.
        **kwargs: The arguments of ``LoadImageFromFile`` (``to_float32``,
            ``color_type``, ``imdecode_backend``, ``backend_args``);
            ``ignore_empty`` is replaced by ``on_error``.

    Examples:
        >>> train_pipeline = [
        ...     dict(type='CheckedLoadImageFromFile', on_error='skip'),
        ...     dict(type='LoadAnnotations', reduce_zero_label=True),
        ...     dict(type='PackSegInputs')]
        >>> test_pipeline = [
        ...     dict(type='CheckedLoadImageFromFile', on_error='raise'),
        ...     dict(type='LoadAnnotations', reduce_zero_label=True),
        ...     dict(type='PackSegInputs')]
    """

    def __init__(self, on_error: str = 'skip', **kwargs):
        if on_error not in ON_ERROR:
            raise ValueError(
                f'on_error must be one of {ON_ERROR}, got {on_error!r}')
        if 'ignore_empty' in kwargs:
            raise TypeError('CheckedLoadImageFromFile takes on_error instead '
                            "of ignore_empty: on_error='skip' or 'raise'")
        super().__init__(**kwargs)
        self.on_error = on_error
        self.num_skipped = 0

    def _read(self, filename: str) -> np.ndarray:
        try:
            data = fileio.get(filename, backend_args=self.backend_args)
        except Exception as error:  # noqa: BLE001 - reported below
            raise ValueError(f'it cannot be read ({type(error).__name__}: '
                             f'{error})') from error
        problem = check_image_bytes(data)
        if problem is None:
            try:
                img = mmcv.imfrombytes(
                    data,
                    flag=self.color_type,
                    backend=self.imdecode_backend)
            except Exception as error:  # noqa: BLE001 - reported below
                img, problem = None, (f'it cannot be decoded '
                                      f'({type(error).__name__}: {error})')
            if img is None and problem is None:
                problem = 'it cannot be decoded as an image'
        if problem is not None:
            raise ValueError(problem)
        return img

    def transform(self, results: dict) -> Optional[dict]:
        """Load ``results['img_path']``; None to skip an unreadable one."""
        filename = results['img_path']
        try:
            img = self._read(filename)
        except ValueError as error:
            if self.on_error == 'raise':
                raise ValueError(
                    f'unreadable image {filename}: {error}') from error
            self.num_skipped += 1
            print_log(
                f'Skipped unreadable image {filename}: {error}; the dataset '
                f'fetches another sample ({self.num_skipped} skipped so '
                'far in this process).',
                logger='current',
                level=logging.WARNING)
            return None
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(on_error={self.on_error!r}, '
                f'to_float32={self.to_float32}, '
                f"color_type='{self.color_type}', "
                f"imdecode_backend='{self.imdecode_backend}', "
                f'backend_args={self.backend_args})')
