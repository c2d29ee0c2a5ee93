"""``workbench data list | fetch NAME | path NAME | verify NAME``: the dataset cache.

    workbench data list
    workbench data fetch ravel                 # from upstream (sha256-checked, resumable)
    workbench data fetch sst --from ~/copies/sst   # a folder or archive you already have
    workbench data verify ravel                # per-file status; RAVEL: entity types present / missing
    workbench data path sst

The cache is ``$WORKBENCH_DATA`` (default ``~/.cache/workbench/data``); the cards are in ``datasets/``.
"""

from __future__ import annotations

import argparse


def list_command(args: argparse.Namespace) -> int:
    from ..data.fetch import listing
    from ..data.registry import data_root
    print(f"cache: {data_root()}")
    print(listing().to_string(index=False))
    return 0


def fetch_command(args: argparse.Namespace) -> int:
    from ..data.fetch import fetch, import_from
    from ..data.registry import get
    entry = get(args.name)
    where = import_from(entry.name, args.source) if args.source else fetch(entry.name, restart=args.restart,
                                                                          progress=not args.quiet)
    print(f"{entry.name}: {where}")
    return _report(entry.name)


def path_command(args: argparse.Namespace) -> int:
    from ..data.registry import dataset_path, file_paths, get
    entry = get(args.name)
    if entry.source == "code":
        from ..data.fetch import check_installed
        print(check_installed(entry))
    elif entry.source == "package":
        dataset_path(entry.name)  # an error when a file is missing
        print("\n".join(str(p) for p in file_paths(entry.name).values()))
    else:
        print(dataset_path(entry.name))
    return 0


def verify_command(args: argparse.Namespace) -> int:
    from ..data.registry import get
    return _report(get(args.name).name)


def _report(name: str) -> int:
    """Print the verify table (and RAVEL's parts); 1 when a file differs from the card."""
    from ..data.fetch import verify
    from ..data.registry import get, manifest
    entry, table = get(name), verify(name)
    shown = table.assign(expected=table["expected"].fillna("(none published)").str[:16],
                         actual=table["actual"].fillna("").astype(str).str[:16], size=table["size"].astype("Int64"))
    if entry.groups:  # files of the parts that are there (the summary line names the others)
        shown = shown[shown.group.isin(set(table.group[table.status != "missing"])) | (table.status == "mismatch")]
    print(shown.drop(columns=[] if entry.groups else ["group"]).to_string(index=False))
    if entry.groups:
        present = [g for g in entry.groups if (table[table.group == g].status != "missing").all()]
        missing = [g for g in entry.groups if g not in present]
        print(f"{entry.name}: present {present or 'none'}; missing {missing or 'none'}"
              + (f" (`workbench data fetch {entry.name}` gets all of them)" if missing else ""))
    source = manifest(name).get("source") if entry.source in ("download", "pypi") else None
    if source:
        print(f"source: {source}")
    if (table.status == "mismatch").any():
        print(f"error: {entry.name} differs from its card ({entry.card}); fetch it again", flush=True)
        return 1
    if not entry.groups and (table.status == "missing").any():
        print(f"error: {entry.name} is incomplete; run `workbench data fetch {entry.name}`")
        return 1
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="datasets: list, fetch (from upstream or --from PATH), path, verify")
    actions = data.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every dataset with its source, version, license and cache status") \
        .set_defaults(func=list_command)
    fetch = actions.add_parser("fetch", help="download a dataset into the cache, or import a copy with --from")
    fetch.add_argument("name")
    fetch.add_argument("--from", dest="source", metavar="PATH", help="a folder, file or archive you already have")
    fetch.add_argument("--restart", action="store_true", help="discard a partial download and start over")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=fetch_command)
    path = actions.add_parser("path", help="where a dataset's files are")
    path.add_argument("name")
    path.set_defaults(func=path_command)
    verify = actions.add_parser("verify", help="check each file against the card's sha256")
    verify.add_argument("name")
    verify.set_defaults(func=verify_command)
