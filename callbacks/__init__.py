"""Example user callbacks: how to extend srlm_pl without touching the package.

Reference them from a config by class path (run from the repository root, which Python puts on
``sys.path`` for ``python -m srlm_pl``):

    trainer:
      callbacks:
        - class_path: callbacks.sample_completions.SampleCompletions
          init_args:
            every_n_steps: 50
            prompts: ["Ava has 3 apples. Ava buys 4 more apples. How many apples does Ava have now?"]
"""
