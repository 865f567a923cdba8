// Host emulation of the cub::BlockScan the kernels use (csrc/emu/cuda_emu.h): the exclusive sum, through
// TempStorage in shared memory. Like cub, it does not synchronise before writing its storage: reusing the
// storage needs a __syncthreads in the kernel.
#pragma once
#include "emu/cuda_emu.h"

namespace cub {

template <typename T, int kThreads>
class BlockScan {
 public:
  struct TempStorage {
    T values[kThreads];
  };
  explicit BlockScan(TempStorage& storage) : storage_(storage) {
    if (blockDim.x * blockDim.y * blockDim.z != kThreads)
      m3k::emu::fail("cub::BlockScan: launched with another block size");
  }

  // output = sum of the inputs of the threads before this one; aggregate = sum over the block.
  void ExclusiveSum(T input, T& output, T& aggregate) {
    const int tid = static_cast<int>(threadIdx.x);
    storage_.values[tid] = input;
    __syncthreads();
    T before{}, all{};
    for (int i = 0; i < kThreads; ++i) {
      if (i == tid) before = all;
      all += storage_.values[i];
    }
    output = before;
    aggregate = all;
  }

 private:
  TempStorage& storage_;
};

}  // namespace cub
