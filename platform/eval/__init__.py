"""Evaluation of a trained Foveated VLM.  ``harness.run_evaluation`` is the whole recipe;
``launch`` runs it as a job (``jobs/evaluate.py``).  Its steps: validation loss per inference
mode and the train/inference gap (``losses``) over val batches (``batches``) of a loaded
checkpoint (``checkpoint``); generated captions and short answers (``captions``) scored with
pycocoevalcap (``caption_metrics``) and VQA accuracy (``vqa_metrics``); multiple-choice
benchmarks (``benchmarks`` over ``benchmark_items``, ``benchmark_frames``, ``mcq``); the results
table, files, MLflow run and heatmap grid (``report``).  ``artifacts`` is the end-of-training
hook (the loss overlay, captions + heatmap into the training run)."""
