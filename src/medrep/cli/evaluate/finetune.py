"""``medrep evaluate finetune``: an encoder and a linear head trained on label fractions, chosen on a validation
split, scored on the test split; ``--frozen`` trains the head alone (the probe in the same loop)."""

from __future__ import annotations

from medrep.cli import options


def _own():
    p = options.parent()
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="label fractions of the training split "
                   "(stratified, nested: a seed's 1 %% subset lies inside its 10 %%; default 0.01 0.1 1)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one label subset and initialisation per seed (default 0 1 2)")
    p.add_argument("--train-split", default="train", help="split trained on (default: train)")
    p.add_argument("--val-split", default="val", help="split for early stopping and model selection (default: val); "
                   "'none' holds out a stratified 10 %% of the train split")
    p.add_argument("--test-split", default="test", help="split scored once, with the best-validation weights (default: test)")
    p.add_argument("--frozen", action="store_true", help="train the head only, on the frozen encoder (a linear probe)")
    p.add_argument("--epochs", type=int, default=50, help="most epochs (default 50, as MGCA)")
    p.add_argument("--min-batches-per-epoch", type=int, default=10, help="an epoch repeats a small labelled subset until it "
                   "holds this many batches (default 10; 1 %% of a small data set is otherwise one step an epoch)")
    p.add_argument("--patience", type=int, default=10, help="stop after this many epochs without a better validation score (default 10)")
    p.add_argument("--lr", type=float, default=5e-4, help="head learning rate (default 5e-4, as MGCA)")
    p.add_argument("--encoder-lr", type=float, default=1e-4, help="encoder learning rate when fine-tuning (default 1e-4)")
    p.add_argument("--weight-decay", type=float, default=1e-6, help="AdamW weight decay (default 1e-6, as MGCA)")
    p.add_argument("--optimizer", default="adamw", help="adamw (default) or sgd (momentum 0.9)")
    p.add_argument("--augment", default="light", help="light (crop 70-100 %%, rotation <= 10 degrees, mild intensity; "
                   "default) or none")
    p.add_argument("--select", default="loss", help="validation score for early stopping: loss (default, as MGCA) or auroc")
    return p


def add_finetune(tasks):
    return options.command(
        tasks, "finetune", "fine-tune the encoder with a linear head at label fractions, early stopping on a validation "
        "split (AUROC, accuracy)", parents=[options.encoder(), options.data(), _own(),
                                            options.batch_size(48, "images per training step (default 48, as MGCA)"),
                                            options.device(), options.output()])


def run_finetune(args) -> int:
    from medrep.evaluate.finetune import FinetuneOptions, evaluate_finetune
    from medrep.evaluate.frozen import data_config

    opts = FinetuneOptions(fractions=args.fractions, seeds=args.seeds, epochs=args.epochs, patience=args.patience,
                           min_batches_per_epoch=args.min_batches_per_epoch,
                           batch_size=args.batch_size, lr=args.lr, encoder_lr=args.encoder_lr, weight_decay=args.weight_decay,
                           optimizer=args.optimizer, augment=args.augment, frozen=args.frozen, select=args.select)
    data = data_config(args.encoder, args.data, args.source, args.skip_bad, args.size)
    val = None if args.val_split.lower() == "none" else args.val_split
    result = evaluate_finetune(args.encoder, data, opts, random_init=args.random_init, train_split=args.train_split,
                               val_split=val, test_split=args.test_split, device=args.device, out=args.out)
    print(result["table"])
    if any(result["skipped"].values()):
        print("skipped unreadable files: " + ", ".join(f"{n} in {split}" for split, n in result["skipped"].items() if n))
    if args.out:
        print(f"written: {args.out}")
    return 0
