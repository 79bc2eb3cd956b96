from .transforms import (CheckedLoadImageFromFile, CheckImageFile,
                         check_image_bytes, identify_image)

__all__ = [
    'CheckedLoadImageFromFile', 'CheckImageFile', 'check_image_bytes',
    'identify_image'
]
