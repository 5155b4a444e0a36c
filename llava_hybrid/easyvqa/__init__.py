"""easy-VQA on a CPU: data prep (`data`), task tokenizer (`tokenizer`), teacher recipe (`teacher`),
scorer (`score`), pipeline (`pipeline`, `python -m llava_hybrid.easyvqa`) and report (`report`)."""
