"""The foveation check: does the fine pass look where the answer is?

    task      the synthetic glyph task: config, paths, rendering, the WebVid raw layout
    draw      how it looks: glyph alphabets, their drawing, the backgrounds
    shards    its shards straight from the rendered frames (machines without PyAV)
    presets   sizes, models and training overrides of the check
    probe     the held-out probes of one trained arm, the heatmap strip and curves
    report    verdict lines, the verdict and the text report
    run       the check end to end: data, two arms trained, probed, judged, logged
    matrix    the check over task variants (one row each) with its controls and bug rows
    standin   the offline stand-in for pretrained DINOv2: the DINOv2 architecture pretrained
              on the check's image domain with a dense objective, saved marked as a stand-in

``jobs/foveation_check.py`` parses the command line and calls ``run.run_check``.
"""
