// Reading whole safetensors tensors into vectors in the tests (header-only: suites bring
// moeatlas_checkpoint through their own LIBS).
#pragma once

#include "checkpoint/safetensors.h"

#include <cstring>
#include <string>
#include <vector>

namespace moeatlas::test {

// The raw values of tensor `name`, reinterpreted as T (the caller knows the dtype).
template <typename T> std::vector<T> tensorValues(const SafetensorsFile& f, const std::string& name)
{
    const auto b = f.bytes(name);
    std::vector<T> v(b.size() / sizeof(T));
    std::memcpy(v.data(), b.data(), b.size());
    return v;
}

} // namespace moeatlas::test
