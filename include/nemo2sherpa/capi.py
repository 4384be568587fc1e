"""sherpa-onnx's C API, from C and from Rust: the clients in clients/capi-c and clients/capi-rust, built here.

The C client is compiled against the runtime's own c-api.h (it ships in the sherpa-onnx wheel beside
libsherpa-onnx-c-api.so) by zig's C compiler from PyPI (runtimes.c_compiler): every worker can build it. The Rust
client is what the Rust crates are: the recognizer config, a tree of plain C structs (pointers, int32_t, float) that
grows with every sherpa-onnx release, declared `#[repr(C)]` from the same header (as bindgen does for sherpa-rs), its
size checked against the C compiler's; it needs cargo. Each build is cached by the hash of the header, the library
it is linked to, the client's sources and the compiler; cargo runs offline (the client uses no crate).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import PermanentError

CLIENT = Path(__file__).resolve().parent / "clients" / "capi-rust"
C_CLIENT = Path(__file__).resolve().parent / "clients" / "capi-c" / "decode.c"
ROOT_STRUCT = "SherpaOnnxOfflineRecognizerConfig"
C_TYPES = {"const char *": "*const c_char", "int32_t": "i32", "float": "f32"}


def _structs(header: str) -> dict[str, list[tuple[str, str]]]:
    """Every `typedef struct X {...} X;` of the header: its fields as (C type, name), comments removed."""
    text = re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", header, flags=re.S))
    out = {}
    for name, body in re.findall(r"typedef struct (\w+) \{(.*?)\} \1;", text, flags=re.S):
        fields = []
        for decl in (" ".join(d.split()) for d in body.split(";")):
            if decl:
                ctype, field = re.match(r"(.*?)\s*(\w+)$", decl).groups()
                fields.append((ctype.strip(), field))
        out[name] = fields
    return out


def rust_bindings(header: str, root: str = ROOT_STRUCT) -> str:
    """`#[repr(C)]` Rust structs for `root` and every struct it holds, in the header's field order; PermanentError
    for a field type the client cannot declare (the header grew something new: extend C_TYPES)."""
    structs = _structs(header)
    order: list[str] = []

    def visit(name: str) -> None:
        for ctype, _ in structs[name]:
            if ctype in structs and ctype not in order:
                visit(ctype)
        if name not in order:
            order.append(name)

    visit(root)
    lines = ["// Made by nemo2sherpa.capi from sherpa-onnx's c-api.h: do not edit."]
    for name in order:
        lines += ["#[repr(C)]", "#[derive(Clone, Copy)]", f"pub struct {name} {{"]
        for ctype, field in structs[name]:
            rust = C_TYPES.get(ctype) or (ctype if ctype in structs else None)
            if rust is None:
                raise PermanentError(f"c-api.h: {name}.{field} has type {ctype!r}, which the Rust client does not "
                                     f"declare; add it to nemo2sherpa.capi.C_TYPES")
            lines.append(f"    pub {field}: {rust},")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _compile_and_run(cc: list[str], src: str, include: Path, exe: Path) -> str:
    """Compile a C program against the header's folder and run it: its output."""
    exe.parent.mkdir(parents=True, exist_ok=True)
    source = exe.with_suffix(".c")
    source.write_text(src)
    proc = subprocess.run([*cc, str(source), "-o", str(exe), "-I", str(include)], text=True, capture_output=True)
    if proc.returncode != 0:
        raise PermanentError(f"compiling the layout check against {include} failed: {proc.stderr[-400:]}")
    return subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.strip()


def _digest(header: Path, lib_dir: Path, sources: list[Path], cc: list[str]) -> str:
    """What a client build depends on: the header, the library it is linked to (rpath: one build per release), its
    sources and the compiler."""
    digest = hashlib.sha256(Path(header).read_bytes())
    digest.update(str(Path(lib_dir).resolve()).encode())
    digest.update(" ".join(cc).encode())
    for p in sources:
        digest.update(p.read_bytes())
    return digest.hexdigest()[:12]


def build_c_client(header: Path, lib_dir: Path, cache: Path, cc: list[str]) -> Path:
    """The C client (clients/capi-c/decode.c) compiled against this runtime's header and linked to its library
    (cached); its binary's path."""
    work = Path(cache) / f"capi-c-{_digest(header, lib_dir, [C_CLIENT], cc)}"
    binary = work / "decode"
    if binary.exists():
        return binary
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    proc = subprocess.run([*cc, "-O1", str(C_CLIENT), "-I", str(Path(header).parents[2]), "-L", str(lib_dir),
                           "-lsherpa-onnx-c-api", f"-Wl,-rpath,{lib_dir}", "-o", str(work / "decode.partial")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise PermanentError(f"compiling the C API client against {header} failed: {proc.stderr[-1500:]}")
    os.replace(work / "decode.partial", binary)
    return binary


def build_client(header: Path, lib_dir: Path, cache: Path, cc: list[str]) -> Path:
    """The Rust client built against this runtime's header and library (cached); its binary's path. Its config
    structs are checked against the C compiler's layout (`cc`)."""
    cargo = shutil.which("cargo")
    if not cargo:
        raise PermanentError("the C API (Rust) runtime needs cargo and rustc on PATH (rustup.rs, or the Debian "
                             "packages cargo and rustc); or leave 'rust' out of the run's runtimes: 'c' calls the "
                             "same C API")
    sources = sorted(p for p in CLIENT.rglob("*") if p.is_file() and "target" not in p.parts)
    work = Path(cache) / f"capi-rust-{_digest(header, lib_dir, sources, cc)}"
    binary = work / "target" / "release" / "nemo2sherpa-capi-client"
    if binary.exists():
        return binary
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(CLIENT, work, ignore=shutil.ignore_patterns("target"))
    (work / "bindings.rs").write_text(rust_bindings(Path(header).read_text()))
    env = {**os.environ, "NEMO2SHERPA_CAPI_BINDINGS": str(work / "bindings.rs"),
           "RUSTFLAGS": f"-L native={lib_dir} -C link-arg=-Wl,-rpath,{lib_dir}", "CARGO_TARGET_DIR": str(work / "target")}
    proc = subprocess.run([cargo, "build", "--release", "--offline", "--quiet"], cwd=work, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise PermanentError(f"building the Rust C API client failed: {proc.stderr[-1500:]}")
    rust = int(subprocess.run([str(binary), "--sizeof"], capture_output=True, text=True, check=True).stdout)
    c = int(_compile_and_run(cc, f'#include <stdio.h>\n#include "sherpa-onnx/c-api/c-api.h"\n'
                                 f'int main(void) {{ printf("%zu\\n", sizeof({ROOT_STRUCT})); return 0; }}\n',
                             Path(header).parents[2], work / "sizeof"))
    if rust != c:
        binary.unlink()
        raise PermanentError(f"the Rust declaration of {ROOT_STRUCT} is {rust} bytes, C's is {c}: the bindings do not "
                             f"match {header}")
    return binary
