// Host emulation of the cub::BlockRadixSort the kernels use (csrc/emu/cuda_emu.h): a stable sort of the blocked
// arrangement (thread t holds items t * kItems .. t * kItems + kItems - 1) by key bits [begin_bit, end_bit), with
// values, through TempStorage in shared memory. Like cub, it does not synchronise before writing its storage.
#pragma once
#include <algorithm>
#include <numeric>
#include <vector>

#include "emu/cuda_emu.h"

namespace cub {

template <typename Key, int kThreads, int kItems, typename Value>
class BlockRadixSort {
 public:
  struct TempStorage {
    Key keys[kThreads * kItems];
    Value values[kThreads * kItems];
  };
  explicit BlockRadixSort(TempStorage& storage) : storage_(storage) {
    if (blockDim.x * blockDim.y * blockDim.z != kThreads)
      m3k::emu::fail("cub::BlockRadixSort: launched with another block size");
  }

  void Sort(Key (&keys)[kItems], Value (&values)[kItems], int begin_bit = 0, int end_bit = int(sizeof(Key) * 8)) {
    const int base = static_cast<int>(threadIdx.x) * kItems;
    for (int e = 0; e < kItems; ++e) {
      storage_.keys[base + e] = keys[e];
      storage_.values[base + e] = values[e];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      const int bits = end_bit - begin_bit;
      const Key mask = bits >= int(sizeof(Key) * 8) ? ~Key(0) : (Key(1) << bits) - 1;
      auto digit = [&](int i) { return Key(storage_.keys[i] >> begin_bit) & mask; };
      std::vector<int> order(kThreads * kItems);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return digit(a) < digit(b); });
      std::vector<Key> k(order.size());
      std::vector<Value> v(order.size());
      for (size_t i = 0; i < order.size(); ++i) {
        k[i] = storage_.keys[order[i]];
        v[i] = storage_.values[order[i]];
      }
      std::copy(k.begin(), k.end(), storage_.keys);
      std::copy(v.begin(), v.end(), storage_.values);
    }
    __syncthreads();
    for (int e = 0; e < kItems; ++e) {
      keys[e] = storage_.keys[base + e];
      values[e] = storage_.values[base + e];
    }
  }

 private:
  TempStorage& storage_;
};

}  // namespace cub
