//! A sherpa-onnx C API client in Rust, as the Rust bindings are: the recognizer config as `#[repr(C)]` structs
//! (bindings.rs, made from the runtime's own c-api.h by nemo2sherpa's capi.py; a size check against the C
//! compiler's guards the layout), the handful of `extern "C"` functions declared here, and the config fields
//! sherpa-rs sets for a NeMo transducer: model_type "nemo_transducer", feature_dim, num_threads, provider.
//!
//! usage: nemo2sherpa-capi-client --encoder E --decoder D --joiner J --tokens T [--threads N] [--provider P]
//!        [--feature-dim F] WAV...    (or --sizeof: the config struct's size, for the layout check)
//! prints {"version": ...} then one JSON result (the C API's own) per wav, in order.

#![allow(non_snake_case, non_camel_case_types, dead_code)]

use std::ffi::{c_char, CStr, CString};
use std::process::exit;

include!(env!("NEMO2SHERPA_CAPI_BINDINGS"));

#[repr(C)]
pub struct SherpaOnnxOfflineRecognizer {
    _private: [u8; 0],
}
#[repr(C)]
pub struct SherpaOnnxOfflineStream {
    _private: [u8; 0],
}
#[repr(C)]
pub struct SherpaOnnxWave {
    pub samples: *const f32,
    pub sample_rate: i32,
    pub num_samples: i32,
}

#[link(name = "sherpa-onnx-c-api")]
extern "C" {
    fn SherpaOnnxGetVersionStr() -> *const c_char;
    fn SherpaOnnxCreateOfflineRecognizer(config: *const SherpaOnnxOfflineRecognizerConfig)
        -> *const SherpaOnnxOfflineRecognizer;
    fn SherpaOnnxDestroyOfflineRecognizer(recognizer: *const SherpaOnnxOfflineRecognizer);
    fn SherpaOnnxCreateOfflineStream(recognizer: *const SherpaOnnxOfflineRecognizer) -> *const SherpaOnnxOfflineStream;
    fn SherpaOnnxDestroyOfflineStream(stream: *const SherpaOnnxOfflineStream);
    fn SherpaOnnxAcceptWaveformOffline(stream: *const SherpaOnnxOfflineStream, sample_rate: i32, samples: *const f32,
                                       n: i32);
    fn SherpaOnnxDecodeOfflineStream(recognizer: *const SherpaOnnxOfflineRecognizer,
                                     stream: *const SherpaOnnxOfflineStream);
    fn SherpaOnnxGetOfflineStreamResultAsJson(stream: *const SherpaOnnxOfflineStream) -> *const c_char;
    fn SherpaOnnxDestroyOfflineStreamResultJson(s: *const c_char);
    fn SherpaOnnxReadWave(filename: *const c_char) -> *const SherpaOnnxWave;
    fn SherpaOnnxFreeWave(wave: *const SherpaOnnxWave);
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in arguments")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--sizeof") {
        println!("{}", std::mem::size_of::<SherpaOnnxOfflineRecognizerConfig>());
        return;
    }
    let (mut opts, mut wavs) = (std::collections::HashMap::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(key) = a.strip_prefix("--") {
            opts.insert(key.to_string(), it.next().cloned().unwrap_or_default());
        } else {
            wavs.push(a.clone());
        }
    }
    let get = |k: &str, default: &str| opts.get(k).cloned().unwrap_or_else(|| default.to_string());
    let (encoder, decoder, joiner, tokens) = (cstr(&get("encoder", "")), cstr(&get("decoder", "")),
                                              cstr(&get("joiner", "")), cstr(&get("tokens", "")));
    let (provider, model_type, method) = (cstr(&get("provider", "cpu")), cstr("nemo_transducer"), cstr("greedy_search"));
    // Every field zero (null strings, 0 numbers), then the ones a NeMo transducer needs: what sherpa-rs does.
    let mut config: SherpaOnnxOfflineRecognizerConfig = unsafe { std::mem::zeroed() };
    config.feat_config.sample_rate = 16000;
    config.feat_config.feature_dim = get("feature-dim", "80").parse().unwrap_or(80);
    config.model_config.transducer.encoder = encoder.as_ptr();
    config.model_config.transducer.decoder = decoder.as_ptr();
    config.model_config.transducer.joiner = joiner.as_ptr();
    config.model_config.tokens = tokens.as_ptr();
    config.model_config.num_threads = get("threads", "2").parse().unwrap_or(2);
    config.model_config.provider = provider.as_ptr();
    config.model_config.model_type = model_type.as_ptr();
    config.decoding_method = method.as_ptr();
    unsafe {
        let version = CStr::from_ptr(SherpaOnnxGetVersionStr()).to_string_lossy().into_owned();
        println!("{{\"version\": \"{}\"}}", version);
        let recognizer = SherpaOnnxCreateOfflineRecognizer(&config);
        if recognizer.is_null() {
            eprintln!("sherpa-onnx rejected the config (SherpaOnnxCreateOfflineRecognizer returned NULL)");
            exit(2);
        }
        for w in &wavs {
            let path = cstr(w);
            let wave = SherpaOnnxReadWave(path.as_ptr());
            if wave.is_null() {
                eprintln!("cannot read {}", w);
                exit(2);
            }
            let stream = SherpaOnnxCreateOfflineStream(recognizer);
            SherpaOnnxAcceptWaveformOffline(stream, (*wave).sample_rate, (*wave).samples, (*wave).num_samples);
            SherpaOnnxDecodeOfflineStream(recognizer, stream);
            let json = SherpaOnnxGetOfflineStreamResultAsJson(stream);
            println!("{}", CStr::from_ptr(json).to_string_lossy());
            SherpaOnnxDestroyOfflineStreamResultJson(json);
            SherpaOnnxDestroyOfflineStream(stream);
            SherpaOnnxFreeWave(wave);
        }
        SherpaOnnxDestroyOfflineRecognizer(recognizer);
    }
}
