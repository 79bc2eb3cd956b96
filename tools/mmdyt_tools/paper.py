"""The paper's numbers the tools print, read from ``configs/metafile.yml``
(their one source: the model index states them per recipe)."""
import os.path as osp
from typing import Dict, Optional, Tuple

#: The model index of the repository's recipes.
METAFILE = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'metafile.yml')


def paper_gflops(config: str, metafile: str = METAFILE
                 ) -> Optional[Tuple[str, Dict[str, float]]]:
    """The paper's GFLOPs for the model of ``config``: the ``Paper GFLOPs``
    of the metafile entry whose ``Config`` has the same file name.

    Args:
        config (str): Path of a config file.
        metafile (str): The model index. Defaults to :data:`METAFILE`.

    Returns:
        tuple[str, dict[str, float]] | None: What the paper counts (its
        ``Paper GFLOPs Counted``, e.g. ``'Table 11, backbone + FPN'``) and
        its GFLOPs by row, or None where the metafile (or the file itself)
        states none.
    """
    if not osp.isfile(metafile):
        return None
    import yaml
    with open(metafile) as file:
        models = yaml.safe_load(file).get('Models', [])
    name = osp.basename(config)
    for model in models:
        meta = model.get('Metadata') or {}
        if osp.basename(model.get('Config', '')) == name and \
                'Paper GFLOPs' in meta:
            return meta['Paper GFLOPs Counted'], dict(meta['Paper GFLOPs'])
    return None
