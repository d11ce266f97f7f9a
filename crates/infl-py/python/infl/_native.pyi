"""Type stubs of infl's compiled module (``infl._native``); the public API is ``infl``'s."""

from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class InflError(ValueError):
    """Bad input or settings; the message is the one the ``infl`` command prints."""

_Path = Union[str, PathLike[str]]

def topk(run: _Path, k: int, *, layer: Optional[str] = ..., layers: Optional[List[str]] = ...,
         method: str = ..., shard: Optional[Tuple[int, int]] = ..., loss: str = ...,
         reduction: str = ..., include_bias: bool = ..., learning_rate: float = ...,
         projection_dim: Optional[int] = ..., seed: int = ..., backend: str = ...,
         threads: Optional[int] = ..., influence: Optional[Dict[str, Any]] = ...
         ) -> Dict[str, Any]: ...
def scores(run: _Path, *, layer: Optional[str] = ..., layers: Optional[List[str]] = ...,
           method: str = ..., shard: Optional[Tuple[int, int]] = ..., loss: str = ...,
           reduction: str = ..., include_bias: bool = ..., learning_rate: float = ...,
           projection_dim: Optional[int] = ..., seed: int = ..., backend: str = ...,
           threads: Optional[int] = ..., influence: Optional[Dict[str, Any]] = ...
           ) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def self_influence(run: _Path, *, layer: Optional[str] = ..., layers: Optional[List[str]] = ...,
                   method: str = ..., shard: Optional[Tuple[int, int]] = ..., loss: str = ...,
                   reduction: str = ..., include_bias: bool = ..., learning_rate: float = ...,
                   projection_dim: Optional[int] = ..., seed: int = ..., backend: str = ...,
                   threads: Optional[int] = ..., influence: Optional[Dict[str, Any]] = ...
                   ) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def tracin_fast(checkpoints: Sequence[Tuple[npt.NDArray[np.float32],
                                            Optional[npt.NDArray[np.float32]], float]],
                train_features: Any, train_labels: npt.NDArray[np.integer],
                test_features: Any = ..., test_labels: Optional[npt.NDArray[np.integer]] = ...,
                *, k: Optional[int] = ..., loss: str = ..., reduction: str = ...,
                include_bias: bool = ..., backend: str = ..., threads: Optional[int] = ...
                ) -> Union[npt.NDArray[np.float32], Dict[str, Any]]: ...
def merge_topk(parts: List[Dict[str, Any]], k: int) -> Dict[str, Any]: ...
def shard_rows(i: int, n: int, examples: int) -> Tuple[int, int]: ...
def training_examples(run: _Path, *, layer: Optional[str] = ...,
                      layers: Optional[List[str]] = ...) -> int: ...
def methods() -> List[str]: ...
