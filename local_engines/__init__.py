"""Our own inference: TTS engines that run in this process (or as `voxrouter engine serve`).

Pure inference: nothing here imports the gateway (`voxrouter.router`) or its providers;
`.importlinter` holds the rule and a test checks it.

onnxruntime reports usage to its vendor unless told not to, and reads the switch when it
is first imported, so it is set here, before any engine module can import it.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
