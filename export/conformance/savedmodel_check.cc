// Loads one SavedModel version the way tensorflow_model_server does, and replays its warmup.
//
// Usage:
//   savedmodel_check VERSION_DIR DESCRIPTOR_SET ANSWERS [TAG ...]
//
// VERSION_DIR      a version folder (saved_model.pb, variables/, assets.extra/).
// DESCRIPTOR_SET   a serialized google.protobuf.FileDescriptorSet holding
//                  tensorflow_serving/apis/prediction_log.proto and its imports. PredictionLog
//                  is not compiled into TensorFlow, so the warmup records are read as dynamic
//                  messages built from these descriptors.
// ANSWERS          a TFRecord file to write: one tensorflow.NamedTensorProto per output, named
//                  "<record index>/<signature>/<output alias>".
// TAG              MetaGraph tags to load (default: serve).
//
// The load goes through tensorflow::LoadSavedModel and each request through Session::Run with
// the SignatureDef's tensor names, as TF Serving's predict path does. It prints one
// tab-separated line for the load and one per record:
//   load    OK
//   record  <index>  <signature>  OK
//   record  <index>  <signature>  <status code>  <message>
// Exit status: 0 when the load and every run succeed, 1 when one fails, 2 on usage errors.

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/message.h"
#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor.pb.h"
#include "tensorflow/core/lib/io/record_reader.h"
#include "tensorflow/core/lib/io/record_writer.h"
#include "tensorflow/core/platform/env.h"
#include "tensorflow/core/protobuf/named_tensor.pb.h"
#include "tensorflow/core/public/session.h"

namespace {

namespace pb = google::protobuf;
using absl::Status;

constexpr char kWarmupFile[] = "assets.extra/tf_serving_warmup_requests";
constexpr char kPredictionLog[] = "tensorflow.serving.PredictionLog";
// PredictRequest.model_spec.signature_name may be empty; TF Serving then uses this one.
constexpr char kDefaultSignature[] = "serving_default";

// One warmup request: the signature it names and its inputs by alias.
struct Request {
  std::string signature;
  std::vector<std::pair<std::string, tensorflow::TensorProto>> inputs;
  // Empty for a predict_log; otherwise the kind of log that is not replayed.
  std::string unsupported;
};

// Reads `path` whole.
Status ReadFile(const std::string& path, std::string* out) {
  return tensorflow::ReadFileToString(tensorflow::Env::Default(), path, out);
}

// Builds every file of the descriptor set, in order (imports come before their importers).
Status BuildPool(const std::string& path, pb::DescriptorPool* pool) {
  std::string bytes;
  Status status = ReadFile(path, &bytes);
  if (!status.ok()) return status;
  pb::FileDescriptorSet set;
  if (!set.ParseFromString(bytes)) {
    return absl::InvalidArgumentError("not a FileDescriptorSet: " + path);
  }
  for (const pb::FileDescriptorProto& file : set.file()) {
    if (pool->BuildFile(file) == nullptr) {
      return absl::InvalidArgumentError("cannot build descriptor " + file.name());
    }
  }
  return absl::OkStatus();
}

const pb::FieldDescriptor* Field(const pb::Message& message, const char* name) {
  return message.GetDescriptor()->FindFieldByName(name);
}

const pb::Message& SubMessage(const pb::Message& message, const char* name) {
  return message.GetReflection()->GetMessage(message, Field(message, name));
}

// Reads the signature and inputs of one PredictionLog through protobuf reflection.
Status ToRequest(const pb::Message& log, Request* request) {
  const pb::Reflection* reflection = log.GetReflection();
  const pb::OneofDescriptor* kind = log.GetDescriptor()->FindOneofByName("log_type");
  const pb::FieldDescriptor* set = reflection->GetOneofFieldDescriptor(log, kind);
  if (set == nullptr || set->name() != "predict_log") {
    request->unsupported = set == nullptr ? "empty log" : set->name();
    return absl::OkStatus();
  }
  const pb::Message& predict = SubMessage(SubMessage(log, "predict_log"), "request");
  const pb::Message& spec = SubMessage(predict, "model_spec");
  request->signature = spec.GetReflection()->GetString(spec, Field(spec, "signature_name"));
  if (request->signature.empty()) request->signature = kDefaultSignature;
  // A proto map is a repeated field of entries with `key` and `value`.
  const pb::FieldDescriptor* inputs = Field(predict, "inputs");
  const pb::Reflection* predict_reflection = predict.GetReflection();
  for (int i = 0; i < predict_reflection->FieldSize(predict, inputs); ++i) {
    const pb::Message& entry = predict_reflection->GetRepeatedMessage(predict, inputs, i);
    const pb::Reflection* entry_reflection = entry.GetReflection();
    std::string alias = entry_reflection->GetString(entry, Field(entry, "key"));
    // The dynamic TensorProto and TensorFlow's compiled one share a wire format.
    tensorflow::TensorProto tensor;
    if (!tensor.ParseFromString(SubMessage(entry, "value").SerializeAsString())) {
      return absl::InvalidArgumentError("input " + alias + " is not a TensorProto");
    }
    request->inputs.emplace_back(std::move(alias), std::move(tensor));
  }
  return absl::OkStatus();
}

// Reads every record of the warmup file; a missing file gives no requests, as in TF Serving.
Status ReadWarmup(const std::string& path, const pb::DescriptorPool& pool,
                  std::vector<Request>* requests) {
  tensorflow::Env* env = tensorflow::Env::Default();
  if (!env->FileExists(path).ok()) return absl::OkStatus();
  const pb::Descriptor* type = pool.FindMessageTypeByName(kPredictionLog);
  if (type == nullptr) {
    return absl::InvalidArgumentError(std::string("descriptor set lacks ") + kPredictionLog);
  }
  pb::DynamicMessageFactory factory(&pool);
  std::unique_ptr<tensorflow::RandomAccessFile> file;
  Status status = env->NewRandomAccessFile(path, &file);
  if (!status.ok()) return status;
  tensorflow::io::RecordReader reader(file.get());
  uint64_t offset = 0;
  tensorflow::tstring record;
  while (true) {
    status = reader.ReadRecord(&offset, &record);
    if (absl::IsOutOfRange(status)) return absl::OkStatus();
    if (!status.ok()) return status;
    std::unique_ptr<pb::Message> log(factory.GetPrototype(type)->New());
    if (!log->ParseFromString(std::string(record))) {
      return absl::InvalidArgumentError("warmup record " + std::to_string(requests->size()) +
                                        " is not a PredictionLog");
    }
    Request request;
    status = ToRequest(*log, &request);
    if (!status.ok()) return status;
    requests->push_back(std::move(request));
  }
}

// Runs one request by the SignatureDef's tensor names, fetching every output (sorted by alias).
Status Run(const tensorflow::SavedModelBundle& bundle, const Request& request,
           std::vector<std::string>* aliases, std::vector<tensorflow::Tensor>* outputs) {
  const auto& signatures = bundle.meta_graph_def.signature_def();
  auto found = signatures.find(request.signature);
  if (found == signatures.end()) {
    return absl::FailedPreconditionError("Serving signature key \"" + request.signature +
                                         "\" not found.");
  }
  const tensorflow::SignatureDef& signature = found->second;
  if (request.inputs.size() != static_cast<size_t>(signature.inputs_size())) {
    return absl::InvalidArgumentError(
        "the request has " + std::to_string(request.inputs.size()) + " inputs, signature " +
        request.signature + " takes " + std::to_string(signature.inputs_size()));
  }
  std::vector<std::pair<std::string, tensorflow::Tensor>> feeds;
  for (const auto& [alias, proto] : request.inputs) {
    auto info = signature.inputs().find(alias);
    if (info == signature.inputs().end()) {
      return absl::InvalidArgumentError("input alias " + alias + " is not in signature " +
                                        request.signature);
    }
    tensorflow::Tensor tensor;
    if (!tensor.FromProto(proto)) {
      return absl::InvalidArgumentError("input " + alias + " is not a valid tensor");
    }
    feeds.emplace_back(info->second.name(), std::move(tensor));
  }
  for (const auto& output : signature.outputs()) aliases->push_back(output.first);
  std::sort(aliases->begin(), aliases->end());
  std::vector<std::string> fetches;
  for (const std::string& alias : *aliases) {
    fetches.push_back(signature.outputs().at(alias).name());
  }
  return bundle.session->Run(tensorflow::RunOptions(), feeds, fetches, {}, outputs, nullptr);
}

// One line: status code and message, newlines folded so the line stays one line.
std::string OneLine(const Status& status) {
  std::string message(status.message());
  std::replace(message.begin(), message.end(), '\n', ' ');
  std::replace(message.begin(), message.end(), '\t', ' ');
  return absl::StatusCodeToString(status.code()) + "\t" + message;
}

// Appends each output as a NamedTensorProto "<index>/<signature>/<alias>".
Status WriteAnswers(tensorflow::io::RecordWriter* writer, size_t index,
                    const std::string& signature, const std::vector<std::string>& aliases,
                    const std::vector<tensorflow::Tensor>& outputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    tensorflow::NamedTensorProto named;
    named.set_name(std::to_string(index) + "/" + signature + "/" + aliases[i]);
    // Strings go to string_val (tensor_content has no portable string encoding).
    if (outputs[i].dtype() == tensorflow::DT_STRING) {
      outputs[i].AsProtoField(named.mutable_tensor());
    } else {
      outputs[i].AsProtoTensorContent(named.mutable_tensor());
    }
    Status status = writer->WriteRecord(named.SerializeAsString());
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

int Check(const std::string& export_dir, const std::string& descriptors,
          const std::string& answers, const std::unordered_set<std::string>& tags) {
  pb::DescriptorPool pool;
  Status status = BuildPool(descriptors, &pool);
  std::vector<Request> requests;
  if (status.ok()) status = ReadWarmup(export_dir + "/" + kWarmupFile, pool, &requests);
  if (!status.ok()) {
    std::printf("warmup\t%s\n", OneLine(status).c_str());
    return 1;
  }
  tensorflow::SavedModelBundle bundle;
  status = tensorflow::LoadSavedModel(tensorflow::SessionOptions(), tensorflow::RunOptions(),
                                      export_dir, tags, &bundle);
  if (!status.ok()) {
    std::printf("load\t%s\n", OneLine(status).c_str());
    return 1;
  }
  std::printf("load\tOK\n");
  std::unique_ptr<tensorflow::WritableFile> file;
  status = tensorflow::Env::Default()->NewWritableFile(answers, &file);
  if (!status.ok()) {
    std::printf("answers\t%s\n", OneLine(status).c_str());
    return 1;
  }
  tensorflow::io::RecordWriter writer(file.get());
  int failures = 0;
  for (size_t index = 0; index < requests.size(); ++index) {
    const Request& request = requests[index];
    if (!request.unsupported.empty()) {
      std::printf("record\t%zu\t-\tSKIPPED\tonly predict_log records are replayed, not %s\n",
                  index, request.unsupported.c_str());
      continue;
    }
    std::vector<std::string> aliases;
    std::vector<tensorflow::Tensor> outputs;
    status = Run(bundle, request, &aliases, &outputs);
    if (status.ok()) status = WriteAnswers(&writer, index, request.signature, aliases, outputs);
    if (status.ok()) {
      std::printf("record\t%zu\t%s\tOK\n", index, request.signature.c_str());
    } else {
      ++failures;
      std::printf("record\t%zu\t%s\t%s\n", index, request.signature.c_str(),
                  OneLine(status).c_str());
    }
  }
  status = writer.Close();
  if (status.ok()) status = file->Close();
  if (!status.ok()) {
    std::printf("answers\t%s\n", OneLine(status).c_str());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s VERSION_DIR DESCRIPTOR_SET ANSWERS [TAG ...]\n", argv[0]);
    return 2;
  }
  std::unordered_set<std::string> tags(argv + 4, argv + argc);
  if (tags.empty()) tags.insert("serve");
  int code = Check(argv[1], argv[2], argv[3], tags);
  std::fflush(stdout);
  return code;
}
