#include "core/sequencer.h"

#include <utility>

namespace pyserver {
namespace core {

void Sequencer::Push(const std::vector<uint64_t>& sequences,
                     std::vector<Completion>* completions) {
  std::vector<Completion> ready;
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < sequences.size(); ++i) {
    waiting_.emplace(sequences[i], std::move((*completions)[i]));
  }
  completions->clear();
  while (!waiting_.empty() && waiting_.begin()->first == next_) {
    ready.push_back(std::move(waiting_.begin()->second));
    waiting_.erase(waiting_.begin());
    ++next_;
  }
  if (!ready.empty()) out_->Push(&ready);
}

size_t Sequencer::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_.size();
}

}  // namespace core
}  // namespace pyserver
