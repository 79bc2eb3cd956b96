from .transforms import CheckedLoadImageFromFile, check_image_bytes

__all__ = ['CheckedLoadImageFromFile', 'check_image_bytes']
