#include <cuda_fp16.h>
extern "C" __global__ void broken(float* out) {
  out[0] = this_name_does_not_exist;
}
