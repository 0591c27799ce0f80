"""The demo dataset generator: small synthetic datasets in the official layouts, generated at run time.

``generate_demo(out_dir, seed=0, scale=1.0)`` writes, deterministically from ``seed``::

    out/tgif/gifs/<gif_name>.gif
    out/tgif/dataset/{Train,Test}_{action,transition,count,frameqa}_question.csv   (TAB-separated)
    out/msrvtt-qa/video/video<id>.mp4
    out/msrvtt-qa/{train,val,test}_qa.json
    out/activitynet-captions/videos/v_<11 chars>.mp4
    out/activitynet-captions/{train,val_1,val_2}.json
    out/how2qa/videos/demo_how2qa_<n>.mp4
    out/how2qa/how2qa_{train,val,test}.jsonl
    out/how2qa/how2_subtitles.jsonl                         (HERO / VALUE subtitle layout)
    out/activitynet-qa/videos/v_<11 chars>.mp4
    out/activitynet-qa/{train,val,test}_{q,a}.json
    out/DEMO.json                                           (what each question depends on, chance levels)

Every answer is a function of the pixels and nothing else: coloured shapes (six saturated colours
far apart in RGB, four shapes) on a background of four grey quadrants, doing scripted things. The
grey quadrants are deliberate: globally pooled CNN features hardly see *where* an object is on a
plain background, but an object that covers a darker or a lighter quadrant changes the pooled
features, so location and direction of motion stay visible to randomly initialised backbones.
Answer values and correct-candidate positions are drawn from balanced (shuffled, cycled) lists and
independently of each other, so neither the question nor the candidates tell anything about the
answer: candidate sets are always the same options in a shuffled order.

TGIF-QA layout, GIFs of 64x64 pixels at 10 fps:

- *mover* GIFs (32 frames): one object of a fixed shape moves left/right/up/down by one pixel per
  frame (31 pixels in all) or grows; it changes colour once, near the middle of the clip; it turns
  white ("flashes") 1 to 5 times, 3 frames per flash with at least 3 frames in between (so that every
  flash and every gap contains a frame of a 16-frame uniform sample). Each mover GIF carries one
  Action question (what does the object do, 5 fixed options), one Transition question (which colour
  it turns into, the 5 colours other than the starting colour named in the question) and one Count
  question (how many times it flashes).
- *still* GIFs (16 frames): one object wobbling by one pixel at the left/right/top/bottom of the
  frame; FrameQA questions of type 2 (its colour), 0 (its shape) and 3 (its location).
- *group* GIFs (16 frames): 1 to 4 identical objects in distinct quadrants; FrameQA type 1 (how many).
  Every frame of every GIF differs from the previous one, so the GIF habit of merging identical
  consecutive frames never changes the frame count.

MSRVTT-QA layout: 32-frame mp4 clips at 10 fps, one object moving in one of four directions and
flashing 1 to 3 times; four questions per video: ``what color ...`` (colour), ``what is ...``
(shape), ``where does ... move`` (direction), ``how many times ...`` (flashes). Split by video:
the first 70% of ids train, the next 10% val, the rest test, as in MSRVTT.

ActivityNet-Captions layout: 120 videos (the first 20, then 100 more from their own random stream so the
other datasets are unchanged; enough training queries for CMIN), 20-40 s mp4 at 5 fps with 2 or 3
objects in horizontal lanes;
3 to 5 non-overlapping scripted events (an object moves to the left/right by one pixel per frame,
jumps up and back down, or blinks), one sentence per event (``The red square moves to the left.``, in
one of three wordings of each kind, ANET_ACTIONS) naming an object unique in its video.
``[start, end]`` = ``[first frame, last frame + 1] / fps`` of
the event: the object's position changes at every frame of a move or jump and at no other frame
(its rest position is the same before and after a jump), and a blink shows it white in the first
two and the last two frames of the event, alternating two white and two coloured frames.
``val_1`` and ``val_2`` annotate the same videos independently (as the two annotators of the official
release): ``val_2`` re-describes a random subset of each video's events, each in a different wording
than val_1's, with boundaries moved by up to ANET_JITTER frame at each end, so no (video, sentence)
of val_2 (the test split) occurs in val_1 (model selection) or train. Train/val videos: 60/40%.

How2QA layout (the SiaSamRea demo's multiple-choice set): 12 s mp4 videos at 5 fps made of three 4 s
scenes, each one wobbling object whose colour and shape are unique in its video. One question per
scene (``what colour is the object in this clip?``) with the scene's seconds as ``ts``; the four
candidates are the three colours of the video plus one more, so only the segment tells which is right.
Subtitles in HERO's / VALUE's ``how2_subtitles.jsonl`` layout: a narration line over most scenes (every
fourth scene, counted over the layout, has none) naming the scene's shape, never its colour, so they
exercise the subtitle input without deciding the answer; they are a function of the plan (no random
draws), so adding them changed no other data.
ActivityNet-QA layout (open-ended): 10-20 s mp4 videos at 5 fps, one object visible over a window that
covers at least the middle half of the video; one question, ``what color is the <shape>`` (type 4,
color). Both split by video 60/20/20%, drawn from a random stream of their own (the other layouts are
unchanged by them). Only colour is asked: the demo extracts features with RANDOM backbone weights at
64 px, and a linear probe on those features (scene-mean, standardised) reads the colour (0.85 held-out)
but not the shape (0.27, chance 0.25), so shape questions would not be decidable from the features.

One module per layout: ``tgif.py``, ``msrvtt.py``, ``activitynet_captions.py``, ``how2qa.py``,
``activitynet_qa.py``; what they share in ``common.py`` (the frame, shapes, balanced draws, counts),
``movers.py`` (TGIF-QA movers and MSRVTT-QA clips) and ``qa_scenes.py`` (How2QA and ActivityNet-QA
scenes); ``generate.py`` plans them in a fixed order of random draws and writes them.
"""

from pipelines.demo.activitynet_captions import ANET_ACTIONS, ANET_JITTER
from pipelines.demo.common import (
    BACKGROUND_LEVELS,
    DEMO_FORMAT,
    FLASH_RGB,
    FRAME_SIZE,
    NUMBER_WORDS,
    PALETTE,
    SHAPES,
    shape_mask,
)
from pipelines.demo.generate import generate_demo
from pipelines.demo.qa_scenes import QA_SIZE
from pipelines.demo.tgif import ACTIONS, LOCATIONS, TGIF_COLUMNS

__all__ = [
    "ACTIONS", "ANET_ACTIONS", "ANET_JITTER", "BACKGROUND_LEVELS", "DEMO_FORMAT", "FLASH_RGB", "FRAME_SIZE",
    "LOCATIONS", "NUMBER_WORDS", "PALETTE", "QA_SIZE", "SHAPES", "TGIF_COLUMNS", "generate_demo",
    "shape_mask",
]
