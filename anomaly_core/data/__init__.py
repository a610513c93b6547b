"""Data sources and Grain pipelines shared by f-UNetGAN and GON.

Sources ('mvtec', 'folder', 'demo', 'mnist_corrupted', 'digits', 'mnist_c_local') all produce a
`Split` of `Record`s; `train_iterator` and `eval_batches` turn a split into
batches (see `pipeline` for the batch format). Settings: `default_data_config()`.
"""

from anomaly_core.data.config import (
    SOURCES,
    data_rules,
    default_data_config,
    default_demo_root,
    validate_data_config,
)
from anomaly_core.data.demo_textures import (
    DEMO_DEFECTS,
    DEMO_TEXTURES,
    demo_category,
    ensure_demo_dataset,
)
from anomaly_core.data.image_folder import ImageFolder, load_image_folder
from anomaly_core.data.image_io import IMAGE_EXTENSIONS, ImageReadError
from anomaly_core.data.mnist_corrupted import MNIST_CORRUPTIONS
from anomaly_core.data.mvtec import MVTEC_CATEGORIES, MVTEC_URL
from anomaly_core.data.pipeline import (
    Batch,
    EvalBatches,
    eval_batches,
    eval_masks,
    eval_plan,
    train_dataset,
    train_iterator,
)
from anomaly_core.data.records import ANOMALOUS, NORMAL, UNKNOWN, DataError, Record, Split
from anomaly_core.data.splits import Splits, load_split

__all__ = [
    "SOURCES",
    "data_rules",
    "default_data_config",
    "default_demo_root",
    "validate_data_config",
    "DEMO_DEFECTS",
    "DEMO_TEXTURES",
    "demo_category",
    "ensure_demo_dataset",
    "ImageFolder",
    "load_image_folder",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "MNIST_CORRUPTIONS",
    "MVTEC_CATEGORIES",
    "MVTEC_URL",
    "Batch",
    "EvalBatches",
    "eval_batches",
    "eval_masks",
    "eval_plan",
    "train_dataset",
    "train_iterator",
    "ANOMALOUS",
    "NORMAL",
    "UNKNOWN",
    "DataError",
    "Record",
    "Split",
    "load_split",
    "Splits",
]
