"""`python -m llava_hybrid.easyvqa [--train-teacher] [--full] ...`: the easy-VQA main job."""
from .pipeline import main

if __name__ == "__main__":
    main()
