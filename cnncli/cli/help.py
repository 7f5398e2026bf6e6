"""Help texts that several commands share, so each is written once."""

from __future__ import annotations

from cnncli.output.formats import format_help

SET_HELP = "Override a recipe key, e.g. --set train.epochs=3 --set data.root=DIR (repeatable)."
CACHE_DIR_HELP = "Folder for the audio feature cache [default: $CNNCLI_CACHE_DIR, else ~/.cache/cnncli]."
NO_CACHE_HELP = "Do not read or write the audio feature cache."
RESULT_FORMAT_HELP = format_help()  # "table or json.": the registered formats, as cnncli.output registers them
ROW_FORMAT_HELP = format_help(rows=True)
ADAPT_HELP = ("Measure the network's batch norm statistics again on these inputs first (no labels used): for "
              "inputs from one voice, microphone or camera it never met. Scores then depend on the whole set.")
LAYER_HELP = "Grad-CAM at this layer (e.g. conv2, parallel1.branch0.conv1) [default: the last convolution]."
