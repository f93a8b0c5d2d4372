# Which CUDA kernel families to build for the GPUs of this machine (included by
# CMakeLists.txt; also runs in script mode, cmake -P, for tests).
#
# Families (CMakeLists.txt, JAX_GNA_CUDA_ARCHS): 80 is the portable family (xla_ffi/cuda/sm80),
# 90a the Hopper-only one (xla_ffi/cuda/sm90), 100a the Blackwell-only one (xla_ffi/cuda/sm100).

# Every family the build ships by default (JAX_GNA_BUILD_CUDA=1, or GPUs of unknown arch).
set(JAX_GNA_DEFAULT_FAMILIES "80;90a")

# The families that run on the GPUs nvidia-smi reports, into `out` ("" when there is no GPU or
# no nvidia-smi), and a description of what was found into `found`. Compute capability X.Y:
# the portable family 80 runs on every X.Y >= 8.0 (natively on 8.x/9.0, from its compute_80
# PTX beyond); the "a" families only on exactly their architecture (90a on 9.0, 100a on 10.0).
# A GPU that reports no compute capability (old driver) gets the default families.
function(jax_gna_detected_families out found)
  set(families "")
  find_program(JAX_GNA_NVIDIA_SMI nvidia-smi)
  if(NOT JAX_GNA_NVIDIA_SMI)
    set(${out} "" PARENT_SCOPE)
    set(${found} "no NVIDIA GPU (no nvidia-smi)" PARENT_SCOPE)
    return()
  endif()
  execute_process(
    COMMAND "${JAX_GNA_NVIDIA_SMI}" --query-gpu=compute_cap --format=csv,noheader
    OUTPUT_VARIABLE caps ERROR_VARIABLE err RESULT_VARIABLE rc TIMEOUT 30
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  string(REGEX MATCHALL "[0-9]+\\.[0-9]+" caps "${caps}")
  if(NOT rc EQUAL 0 OR NOT caps)
    string(STRIP "${err}" err)
    if(NOT err)
      set(err "lists no GPU")
    endif()
    if(EXISTS "/proc/driver/nvidia/gpus")
      set(${out} "${JAX_GNA_DEFAULT_FAMILIES}" PARENT_SCOPE)
      set(${found} "an NVIDIA GPU whose compute capability nvidia-smi does not report" PARENT_SCOPE)
    else()
      set(${out} "" PARENT_SCOPE)
      set(${found} "no NVIDIA GPU (nvidia-smi: ${err})" PARENT_SCOPE)
    endif()
    return()
  endif()
  list(REMOVE_DUPLICATES caps)
  foreach(cap IN LISTS caps)
    string(REPLACE "." ";" parts "${cap}")
    list(GET parts 0 major)
    list(GET parts 1 minor)
    math(EXPR cc "${major} * 10 + ${minor}")
    if(cc GREATER_EQUAL 80)
      list(APPEND families 80)
    endif()
    if(cc EQUAL 90)
      list(APPEND families 90a)
    elseif(cc EQUAL 100)
      list(APPEND families 100a)
    endif()
  endforeach()
  list(REMOVE_DUPLICATES families)
  list(JOIN caps ", " caps_text)
  set(${out} "${families}" PARENT_SCOPE)
  if(families)
    set(${found} "GPU compute capability ${caps_text}" PARENT_SCOPE)
  else()
    set(${found} "GPU compute capability ${caps_text} (the kernels need 8.0 or newer)" PARENT_SCOPE)
  endif()
endfunction()
