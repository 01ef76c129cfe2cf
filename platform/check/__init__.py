"""The foveation check: does the fine pass look where the answer is?

    task      the synthetic glyph task: config, paths, rendering, the WebVid raw layout
    draw      how it looks: glyph alphabets, their drawing, the backgrounds
    shards    its shards straight from the rendered frames (machines without PyAV)
    presets   sizes, models and training overrides of the check
    probe     the held-out probes of one trained arm, the heatmap strip and curves
    report    verdict lines, the verdict and the text report
    run       the check end to end: data, two arms trained, probed, judged, logged

``jobs/foveation_check.py`` parses the command line and calls ``run.run_check``.
"""
