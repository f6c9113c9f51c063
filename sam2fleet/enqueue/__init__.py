"""`sam2fleet enqueue`: a folder, glob, manifest or COCO file through the fleet.

Output folder layout (see docs/client.md):

    DIR/state.jsonl       append-only journal: submitted / done / failed per image
    DIR/run.json          the options of the latest run
    DIR/jobs/<name>.json  per image: the source item, the job spec, the job record
    DIR/results.json      COCO dataset of every image done so far
    DIR/detections.json   the same annotations as a COCO results list
    DIR/masks/<name>/     optional: one 0/255 PNG per mask
    DIR/overlays/<name>.png   optional: image + coloured masks + prompts

Resume: an image is done when the journal holds a `done` entry for the same file
content and job spec. A re-run skips those, re-attaches to jobs submitted but not
collected before an interruption, and retries failed ones under a fresh
idempotency key. Every submit carries a key derived from the image's sha256, the
job spec and the attempt number, so a retried submit never makes a second job.

    arguments.py  the command's options (imported by every `sam2fleet` command: light)
    command.py    the command: arguments in, summary out
    options.py    Options and Summary of a run
    journal.py    state.jsonl
    plan.py       job specs, content hashes, idempotency keys: what is left to do
    outputs.py    run.json, jobs/, masks/, overlays/, the COCO files
    progress.py   the progress bar
    run.py        the run: bounded concurrency, collect, submit, wait, record, Ctrl-C

This package imports nothing here, so that `arguments` stays light.
"""
