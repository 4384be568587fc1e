"""nemo2sherpa: NeMo Parakeet-TDT checkpoints to sherpa-onnx bundles.

The stage library. No module here imports Airflow; each stage is a plain function with a CLI
(`python -m nemo2sherpa <stage> ...`) and runs in the venv its requirements file describes.
"""

__version__ = "0.1.0"
# Part of every published bundle's key: a converter fix re-publishes.
PIPELINE_VERSION = "p4"  # p2: int8 by the matmul-qint8 recipe; p3: bundles carry bpe.vocab (hotwords);
# p4: validated on the built-in set with long clips, drift per length bucket, sherpa-onnx on its own features
