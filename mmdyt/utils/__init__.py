from .checkpoint import load_vit_checkpoint, read_state_dict

__all__ = ['load_vit_checkpoint', 'read_state_dict']
