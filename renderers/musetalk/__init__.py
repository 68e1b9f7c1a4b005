"""`musetalk`: an avatar package's video with its lower face re-drawn by MuseTalk 1.5
(renderer.py), the avatar preparation that writes MuseTalk's package (prepare.py), the
networks built from their published configs (networks.py), Whisper audio tokens (audio.py),
the package loader (package.py) and the paste-back (blend.py). Nothing here imports torch at
import time: the registry names `renderers.musetalk.renderer:MuseTalkRenderer`, which imports
it only in `load`."""
