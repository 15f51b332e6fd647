"""tools/shapes — the vidi-shapes scene generator (issue 5).

scene.py        deterministic scenes of coloured shapes (image / video), by seed
render.py       scenes to uint8 arrays
questions.py    questions with exact answers, and captions, from the ground truth
qwen_rules.py   the qwen-vl-utils frame sampling and smart_resize rules vidi follows
write_files.py  (CPU only: Pillow + ffmpeg CLI) scenes to .png/.jpg/.mp4/.webm + manifest.json

Everything but write_files.py needs only numpy and the standard library.
"""
