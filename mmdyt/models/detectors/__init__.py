from .dyt_two_stage import DyTTwoStageDetector

__all__ = ['DyTTwoStageDetector']
