/* A sherpa-onnx C API client in C: the recognizer config from the runtime's own c-api.h, every field zeroed, then the
 * fields a NeMo transducer needs (model_type "nemo_transducer", feature_dim, num_threads, provider), as the Rust
 * client and the Rust crates set them through the same C API. Built by nemo2sherpa's capi.py with the C compiler of
 * the worker or zig's (the ziglang wheel from PyPI): it proves the C API contract where Rust's toolchain is absent.
 *
 * usage: decode --encoder E --decoder D --joiner J --tokens T [--threads N] [--provider P] [--feature-dim F] WAV...
 *        (or --sizeof: the config struct's size)
 * prints {"version": ...} then one JSON result (the C API's own) per wav, in order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sherpa-onnx/c-api/c-api.h"

static const char *opt(int argc, char **argv, const char *name, const char *fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (strncmp(argv[i], "--", 2) == 0 && strcmp(argv[i] + 2, name) == 0) return argv[i + 1];
  return fallback;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i)
    if (strcmp(argv[i], "--sizeof") == 0) {
      printf("%zu\n", sizeof(SherpaOnnxOfflineRecognizerConfig));
      return 0;
    }
  SherpaOnnxOfflineRecognizerConfig config;
  memset(&config, 0, sizeof(config));
  config.feat_config.sample_rate = 16000;
  config.feat_config.feature_dim = atoi(opt(argc, argv, "feature-dim", "80"));
  config.model_config.transducer.encoder = opt(argc, argv, "encoder", "");
  config.model_config.transducer.decoder = opt(argc, argv, "decoder", "");
  config.model_config.transducer.joiner = opt(argc, argv, "joiner", "");
  config.model_config.tokens = opt(argc, argv, "tokens", "");
  config.model_config.num_threads = atoi(opt(argc, argv, "threads", "2"));
  config.model_config.provider = opt(argc, argv, "provider", "cpu");
  config.model_config.model_type = "nemo_transducer";
  config.decoding_method = "greedy_search";
  printf("{\"version\": \"%s\"}\n", SherpaOnnxGetVersionStr());
  fflush(stdout);
  const SherpaOnnxOfflineRecognizer *recognizer = SherpaOnnxCreateOfflineRecognizer(&config);
  if (!recognizer) {
    fprintf(stderr, "sherpa-onnx rejected the config (SherpaOnnxCreateOfflineRecognizer returned NULL)\n");
    return 2;
  }
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], "--", 2) == 0) {
      ++i; /* an option's value */
      continue;
    }
    const SherpaOnnxWave *wave = SherpaOnnxReadWave(argv[i]);
    if (!wave) {
      fprintf(stderr, "cannot read %s\n", argv[i]);
      return 2;
    }
    const SherpaOnnxOfflineStream *stream = SherpaOnnxCreateOfflineStream(recognizer);
    SherpaOnnxAcceptWaveformOffline(stream, wave->sample_rate, wave->samples, wave->num_samples);
    SherpaOnnxDecodeOfflineStream(recognizer, stream);
    const char *json = SherpaOnnxGetOfflineStreamResultAsJson(stream);
    printf("%s\n", json);
    fflush(stdout);
    SherpaOnnxDestroyOfflineStreamResultJson(json);
    SherpaOnnxDestroyOfflineStream(stream);
    SherpaOnnxFreeWave(wave);
  }
  SherpaOnnxDestroyOfflineRecognizer(recognizer);
  return 0;
}
