"""``retinasynth`` command line. Each command maps flags to the library's config and makes one call."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import click

from retinasynth import __version__
from retinasynth.errors import RetinaSynthError
from retinasynth.profiles import BENCH_PROFILES, DEFAULT_SOURCES, FIT_PROFILES, profiles_help
from retinasynth.progress import ensure_line_start, message_mode
from retinasynth.synth.appearance import DEFAULT_APPEARANCE, appearance_names


class _Group(click.Group):
    """Turns library errors into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RetinaSynthError as e:
            ensure_line_start()  # after a progress bar, the message still starts its own line
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            ensure_line_start()
            click.echo("interrupted; rerun with --resume to continue where it stopped.", err=True)
            sys.exit(130)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    with message_mode():  # a line of its own, even while a progress bar is drawn
        click.secho(f"warning: {message}", fg="yellow", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="retinasynth")
def main() -> None:
    """retinasynth: synthetic fundus image / vessel mask pairs for retinal vessel segmentation."""
    warnings.showwarning = _show_warning


@main.group(cls=_Group)
def data() -> None:
    """Inspect dataset folders and make phantom data."""


@data.command("inspect")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--layout", default=None, help="Force a layout: drive, kaggle, chase, stare, hrf, nnunet, generic.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def data_inspect(path: str, layout: str | None, as_json: bool) -> None:
    """Report a dataset folder's layout, splits, sizes, mask values, FOV and problems."""
    from retinasynth.data import DataConfig, format_report, inspect_dataset

    DataConfig(layout=layout)  # validates the layout name
    rep = inspect_dataset(path, layout=layout)
    click.echo(json.dumps(rep, indent=2) if as_json else format_report(rep))
    if rep["problems"]:
        sys.exit(1)


@data.command("phantom")
@click.option("--n", "n", type=int, default=40, show_default=True, help="Number of phantom images.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), required=True, help="Output folder.")
@click.option("--size", type=int, default=256, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
def data_phantom(n: int, out_dir: str, size: int, seed: int) -> None:
    """Write procedural fundus-like phantoms with vessel and FOV masks (generic layout)."""
    from retinasynth.synth.phantom import write_phantom_dataset

    out = write_phantom_dataset(out_dir, n=n, size=size, seed=seed)
    click.echo(f"{n} phantom image/mask/FOV triplets written to {out} (generic layout)")


DEVICE_HELP = "auto (cuda if available, else cpu), cpu, cuda or cuda:N; checked before anything runs."


def check_device(ctx, param, value):
    """--device checked up front (retinasynth.device.pick_device): a bad one is one `error:` line, exit 2."""
    if value not in (None, "auto"):
        from retinasynth.device import pick_device

        pick_device(value)
    return value


def _device_option(f):
    return click.option("--device", default=None, metavar="auto|cpu|cuda|cuda:N", callback=check_device,
                        help=DEVICE_HELP)(f)


PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")  # = retinasynth.precision.PRECISIONS (no torch import here)


def _precision_option(what: str, default: str | None = "auto", show: str | bool = True):
    return click.option("--precision", type=click.Choice(PRECISION_CHOICES), default=default, show_default=show,
                        help=f"Numeric precision of {what}: auto = bf16 autocast where the hardware computes bf16 "
                             "natively (CPUs with avx512_bf16/amx_bf16, CUDA with bf16), else fp32 (fp16 on CUDA "
                             "without bf16); fp32/bf16/fp16 force one (an error where the device cannot). "
                             "The resolved precision is recorded.")


@main.command()
@click.option("--data", "data_path", type=click.Path(path_type=str), default=None,
              help="Dataset root folder (any supported layout). Only its training split is used.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), required=True, help="Run directory to create.")
@click.option("--profile", default=None, metavar="|".join(FIT_PROFILES),
              help=profiles_help("the generator's training") + " Default: cpu, or the profile --config records.")
@click.option("--config", "config_file", type=click.Path(path_type=str), default=None,
              help="JSON/YAML file with data/model/train sections overriding the profile, or a run's "
                   "config.json (RUN/config.json rebuilds that run's settings; benchmarks/configs/ holds the retired "
                   "profiles).")
@click.option("-o", "--option", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one setting: SECTION.KEY=VALUE, or KEY=VALUE where only one section has KEY, e.g. "
                   "-o train.steps=2000 -o model.ngf=32 (repeatable).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out with its saved config.")
@click.option("--init", "init_run", type=click.Path(path_type=str), default=None, metavar="RUN",
              help="Start from a finished run's weights (fine-tune), e.g. on a target camera's photographs with "
                   "pseudo-labels (`retinasynth pseudo-label`); the settings default to RUN's recorded config "
                   "(set fewer steps with -o train.steps=N). Sets train.init_from.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_precision_option("the forward passes (sets train.precision; --resume keeps the run's recorded one)", None,
                   "the profile's train.precision: auto")
@_device_option
def fit(data_path, out_dir, profile, config_file, overrides, resume, init_run, quiet, precision, device) -> None:
    """Train the mask-to-fundus Pix2Pix generator on a dataset's training split."""
    from retinasynth.train import build_fit_config
    from retinasynth.train import fit as run_fit

    if init_run is not None and not resume:
        if not (Path(init_run) / "config.json").is_file():
            raise click.UsageError(f"--init {init_run}: not a fit run (no config.json); pass the folder of a "
                                   "finished `retinasynth fit`.")
        if config_file is None and profile is None:
            config_file = str(Path(init_run) / "config.json")
        overrides = (*overrides, f"train.init_from={Path(init_run).resolve()}")
    cfg = build_fit_config(profile, config_file, overrides)
    if not resume and data_path is None:
        raise click.UsageError("--data is required (unless --resume).")
    out = run_fit(cfg, data_path, out_dir, resume=resume, progress=not quiet, device=device, precision=precision)
    if os.environ.get("RANK", "0") == "0":
            click.echo(f"run written to {out} (weights: generator_ema.safetensors, samples: {out}/samples/)")


@main.command()
@click.option("--run", "run_dir", type=click.Path(path_type=str), required=True, help="Run directory from fit.")
@click.option("--data", "data_path", type=click.Path(path_type=str), required=True, help="Dataset root folder.")
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True,
              help="test: the dataset's test split; val: the training images the run held out (data.exclude "
                   "and its validation images), for choosing settings without the test split.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), default=None,
              help="Where to write metrics.json, per_image.csv, comparison.png [RUN/eval-SPLIT].")
@click.option("--raw", is_flag=True, help="Use the raw generator weights instead of the EMA copy.")
@click.option("--reader-steps", type=click.IntRange(min=0), default=600, show_default=True,
              help="Steps of the vessel-consistency reader (a segmenter trained on the run's training images "
                   "that reads rendered and real images); 0 skips the proxy.")
@click.option("--appearance", default=DEFAULT_APPEARANCE, show_default=True,
              help=f"Score the renders with the look synthesize --appearance gives them ({', '.join(appearance_names())}; "
                   "the default is synthesize's), so the measures are of the set you get; 'none': the generator's "
                   "own look.")
@_precision_option("the generator's and the reader's forward passes")
@_device_option
def evaluate(run_dir, data_path, split, out_dir, raw, reader_steps, appearance, precision, device) -> None:
    """MSE, SSIM and PSNR of generated vs real images: the notebook's protocol and a sound one."""
    from retinasynth.train.evaluate import evaluate as run_eval
    from retinasynth.train.evaluate import format_result

    click.echo(format_result(run_eval(run_dir, data_path, split, out_dir, ema=not raw, device=device,
                                      reader_steps=reader_steps, precision=precision, appearance=appearance)))


@main.command()
@click.option("--run", "run_dir", type=click.Path(path_type=str), default=None, help="Run directory from fit.")
@click.option("--n", "n", type=int, default=1000, show_default=True, help="Number of pairs (all shards).")
@click.option("--out", "out_dir", type=click.Path(path_type=str), default=None, help="Output dataset folder.")
@click.option("--merge", "merge_out", type=click.Path(path_type=str), default=None,
              help="--merge OUT SHARD_DIR...: join the folders of --shard i/N runs into OUT (no rendering).")
@click.argument("shard_dirs", nargs=-1, type=click.Path(path_type=str))
@click.option("--source", "sources", default=DEFAULT_SOURCES, show_default=True,
              help="Mask source mix, name:weight,... (real, perturbed, procedural).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--samples-per-mask", type=int, default=1, show_default=True,
              help="Images per mask (>1 renders stochastically, several plausible images per mask).")
@click.option("--stochastic/--deterministic", default=True, show_default=True,
              help="Seeded stochastic rendering (generator dropout on: varied appearance per pair; same seed, same "
                   "bytes) or one fixed image per mask.")
@click.option("--resolution", type=int, default=None, help="Output side in pixels [the run's resolution].")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--shard", default="0/1", show_default=True,
              help="i/N: write only this share of the n pairs (under torchrun each rank takes RANK/WORLD_SIZE).")
@click.option("--workers", type=int, default=2, show_default=True, help="Threads making masks and writing files.")
@click.option("--data", "data_path", type=click.Path(path_type=str), default=None,
              help="Dataset whose training masks feed real/perturbed [the run's training data].")
@click.option("--filter-model", type=click.Path(path_type=str), default=None,
              help="Segmentation checkpoint (benchmark-downstream OUT/models/*.safetensors): drop pairs whose "
                   "segmentation disagrees with their mask.")
@click.option("--style", "style", type=click.Path(path_type=str), default=None,
              help="A folder of unlabelled photographs from your camera: each pair's colours are mapped onto one "
                   "of them (no labels used). Never point it at images you will score.")
@click.option("--style-strength", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Blend of --style: 0 keeps the generator's look, 1 maps the colours fully.")
@click.option("--appearance", default=None,
              help=f"A sampled look per pair ({', '.join(appearance_names())}): 'camera' varies colour, contrast, "
                   "illumination, blur, noise and JPEG as the real+aug arm's camera-shift augmentation does (no "
                   "geometry: masks unchanged); 'none' keeps the generator's own look.  [default: "
                   f"{DEFAULT_APPEARANCE}; none with --style]")
@click.option("--filter-min-dice", type=float, default=0.5, show_default=True,
              help="Keep pairs whose segmented image reaches this Dice against their mask.")
@click.option("--resume", is_flag=True, help="Continue an interrupted synthesis in --out.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@click.option("--quiet", is_flag=True)
@_precision_option("the generator's forward pass (a --resume must resolve to the recorded one)")
@_device_option
def synthesize(run_dir, n, out_dir, merge_out, shard_dirs, sources, seed, samples_per_mask, stochastic, resolution,
               batch_size, shard, workers, data_path, style, style_strength, appearance, filter_model, filter_min_dice, resume,
               overwrite, quiet, precision, device) -> None:
    """Render vessel masks into a synthetic image/mask dataset with full provenance.

    Under torchrun every rank renders its share into the same --out; `--merge OUT SHARD_DIR...` joins
    the folders of separate --shard i/N runs into the folder one run would have written.
    """
    from retinasynth.errors import ConfigError
    from retinasynth.synth.synthesize import SynthConfig, merge_shards
    from retinasynth.synth.synthesize import synthesize as run_synth

    if shard_dirs and not merge_out and not run_dir and not out_dir:
        raise ConfigError(f"synthesize got {len(shard_dirs)} positional argument(s) ({' '.join(shard_dirs)}) but no "
                          "--run/--out: did you forget --run/--out? e.g. retinasynth synthesize --run RUN_DIR --n "
                          "1000 --out DIR (positional folders are only for --merge OUT SHARD_DIR...).")
    if merge_out or shard_dirs:
        if not merge_out or not shard_dirs or out_dir or run_dir:
            raise ConfigError("--merge takes OUT and the shard folders (--merge OUT SHARD_DIR...), without "
                              "--run or --out.")
        r = merge_shards(merge_out, list(shard_dirs), overwrite=overwrite)
        click.echo(f"{r['n']} pairs from {r['shards']} shard(s) in {r['out']} "
                   f"({', '.join(f'{k} {v}' for k, v in sorted(r['counts'].items()))})")
        return
    if not run_dir or not out_dir:
        raise ConfigError("synthesize needs --run RUN_DIR and --out DIR (or --merge OUT SHARD_DIR...).")

    cfg = SynthConfig(n=n, sources=sources, seed=seed, samples_per_mask=samples_per_mask, resolution=resolution,
                      batch_size=batch_size, shard=shard, workers=workers, filter_model=filter_model,
                      filter_min_dice=filter_min_dice, precision=precision, stochastic=stochastic, style=style,
                      style_strength=style_strength, appearance=appearance)
    r = run_synth(run_dir, out_dir, cfg, resume=resume, overwrite=overwrite, data_root=data_path,
                  progress=not quiet, device=device)
    t = r["timing"]
    if "rank" in r:  # torchrun, rank > 0: rank 0 reports the merged folder
        return
    click.echo(f"{r['n']} pairs in {r['out']} ({', '.join(f'{k} {v}' for k, v in sorted(r['counts'].items()))}); "
               f"{t['pairs_this_call']} rendered in {t['total_s']:.1f} s, generator {t['generator_s']:.1f} s; "
               f"preview: {r['out']}/preview.png")


@main.command("env")
@click.option("--profile", type=click.Choice(BENCH_PROFILES), default="cpu", show_default=True,
              help="The benchmark profile whose models are counted (and timed with --measure).")
@click.option("--measure", is_flag=True, help="Time a few segmenter steps here and estimate the benchmark's hours.")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
@_device_option
def env_command(profile, measure, as_json, device) -> None:
    """What auto resolves to here: device, precision, memory format, CPU flags; the benchmark's models."""
    from retinasynth.envinfo import describe_env, format_env

    info = describe_env(device, profile, measure)
    click.echo(json.dumps(info, indent=2) if as_json else format_env(info))


@main.command()
@click.option("--format", "fmt", type=click.Choice(["nnunet", "monai"]), required=True,
              help="nnunet: an nnU-Net v2 raw dataset (imagesTr/<case>_0000.png, labelsTr/, dataset.json); monai: "
                   "images/, labels/ and datalist.json (monai.data.load_decathlon_datalist).")
@click.option("--synth", "synth_dir", type=click.Path(path_type=str), default=None,
              help="A synthetic set written by synthesize.")
@click.option("--real", "real_dir", type=click.Path(path_type=str), default=None,
              help="A real dataset (any supported layout): its training split joins the export (never its test split).")
@click.option("--out", "out_dir", type=click.Path(path_type=str), required=True,
              help="Output folder (for nnU-Net: nnUNet_raw/DatasetXXX_Name).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@click.option("--quiet", is_flag=True)
def export(fmt, synth_dir, real_dir, out_dir, overwrite, quiet) -> None:
    """Write a synthetic set (and a real training split) as an nnU-Net or MONAI dataset."""
    from retinasynth.data.export import export as run_export

    r = run_export(out_dir, fmt, synth=synth_dir, real=real_dir, progress=not quiet, overwrite=overwrite)
    click.echo(f"{r['n']} cases ({r['counts']['synthetic']} synthetic, {r['counts']['real']} real) written to {r['out']} "
               f"as {fmt}")


@main.command("pseudo-label")
@click.option("--photos", "photos", type=click.Path(path_type=str), required=True,
              help="A folder of unlabelled photographs of the target camera (any image format, sub-folders too).")
@click.option("--model", "model", type=click.Path(path_type=str), required=True,
              help="A segmenter trained on source labels: a benchmark-downstream OUT/models/*.safetensors, e.g. "
                   "real_n20_s0.safetensors.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), required=True,
              help="New folder for the pairs (images/, masks/ with the pseudo-labels, fov/, pseudo.json).")
@click.option("--split", type=click.Choice(["train", "test", "all"]), default=None,
              help="Take the images of this split of a dataset folder (its labels unused), e.g. the part of a "
                   "labelled camera set that is not scored.")
@click.option("--threshold", type=float, default=None, help="Vessel probability threshold [the segmenter's].")
@click.option("--max-disc-offset", type=float, default=None, metavar="SHARE",
              help="Leave out photographs whose brightest spot lies farther than SHARE FOV diameters (e.g. 0.15) "
                   "from where the pseudo-mask's vessels converge (a disc cut by the FOV edge, dark or red); all "
                   "photographs' offsets are recorded in pseudo.json.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_device_option
def pseudo_label_command(photos, model, out_dir, split, threshold, max_disc_offset, quiet, device) -> None:
    """Pair a target camera's unlabelled photographs with a segmenter's vessel maps, for `fit --init RUN`."""
    from retinasynth.data.pseudo import pseudo_label

    meta = pseudo_label(photos, out_dir, model, device=device, threshold=threshold, progress=not quiet,
                        split=split, max_disc_offset=max_disc_offset)
    if meta["left_out"]:
        click.echo("left out (disc offset > --max-disc-offset): " + ", ".join(
            f"{i['id']} ({i['disc_offset']})" for i in meta["left_out"]))
    click.echo(f"{meta['n']} pseudo-labelled photographs written to {out_dir}; fine-tune a generator on them with "
               f"`retinasynth fit --init RUN --data {out_dir} --out RUN-target -o train.steps=800 -o train.val_count=1`.")


@main.command()
@click.option("--data", "data_path", type=click.Path(path_type=str), default=None,
              help="A real dataset folder; without it the demo draws phantom data.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), default="retinasynth-demo", show_default=True,
              help="Where every output goes; rerunning continues where it stopped.")
@click.option("--quick", is_flag=True, help="Smallest settings (seconds): checks an installation end to end.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(data_path, out_dir, quick, quiet) -> None:
    """Run fit -> synthesize -> benchmark-downstream end to end (phantom data by default)."""
    from retinasynth.demo import format_summary, run_demo

    click.echo(format_summary(run_demo(out_dir, data_path, quick=quick, progress=not quiet, echo=click.echo)))


from retinasynth_cli.bench import benchmark_downstream  # noqa: E402

main.add_command(benchmark_downstream)

if __name__ == "__main__":
    main()
