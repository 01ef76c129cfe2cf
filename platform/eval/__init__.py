"""Evaluation of a trained Foveated VLM: validation loss per inference mode (``harness``),
generated captions scored with pycocoevalcap (``caption_metrics``), VQA accuracy
(``vqa_metrics``), multiple-choice video benchmarks (``benchmark_items``, ``benchmark_frames``,
``mcq``), and the report (``report``)."""
