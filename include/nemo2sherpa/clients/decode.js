// sherpa-onnx-node (npm) decoding wav files with a NeMo transducer bundle, as an Electron app would.
// usage: node decode.js <encoder> <decoder> <joiner> <tokens> <feature_dim> <threads> wav...
// prints {"version": ..., "native": ...} (the JS package's and its native addon's releases) then one JSON result
// (sherpa-onnx's own) per wav, in order.
const sherpa = require('sherpa-onnx-node');
const [encoder, decoder, joiner, tokens, featureDim, threads, ...wavs] = process.argv.slice(2);
const native = 'sherpa-onnx-' + ({linux: 'linux', darwin: 'darwin', win32: 'win'}[process.platform] || process.platform) +
  '-' + process.arch;
console.log(JSON.stringify({version: require('sherpa-onnx-node/package.json').version,
                            native: require(native + '/package.json').version}));
const recognizer = new sherpa.OfflineRecognizer({
  featConfig: {sampleRate: 16000, featureDim: Number(featureDim)},
  modelConfig: {transducer: {encoder, decoder, joiner}, tokens, numThreads: Number(threads), provider: 'cpu',
                debug: 0, modelType: 'nemo_transducer'},
  decodingMethod: 'greedy_search',
});
for (const wav of wavs) {
  const wave = sherpa.readWave(wav);
  const stream = recognizer.createStream();
  stream.acceptWaveform({samples: wave.samples, sampleRate: wave.sampleRate});
  recognizer.decode(stream);
  console.log(JSON.stringify(recognizer.getResult(stream)));
}
