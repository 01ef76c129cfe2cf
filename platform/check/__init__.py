"""The foveation check: does the fine pass look where the answer is?  The synthetic glyph
task (``task``, ``draw``, ``shards``), its presets (``presets``), the held-out probes of a
trained arm (``probe``) and the verdicts (``report``); ``jobs/foveation_check.py`` runs it."""
