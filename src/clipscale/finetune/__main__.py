"""``python -m clipscale.finetune``: one process of a launched fine-tuning job
(clipscale.finetune.job.main; clipscale.finetune.job.run_job starts them)."""
from clipscale.finetune.job import main
from clipscale.logs import exit_now

if __name__ == "__main__":
    exit_now(main())
