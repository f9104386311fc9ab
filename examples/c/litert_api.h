/* The part of LiteRT's C API (libLiteRt.so, shipped in the ai-edge-litert wheel) that chargen.c calls.
 *
 * Written for this example from the API as documented in google-ai-edge/LiteRT (litert/c/ headers,
 * release 2.x, which the ai-edge-litert 2.3 wheel exports under the symbol version VERS_1.0); the wheel
 * has no headers. Only what the program needs: handles are opaque pointers, a status is an int
 * (0 = success), and the two structures it reads (a tensor's element type and shape) are laid out
 * as the library expects: chargen.c checks their sizes at compile time and their contents at start-up.
 */
#ifndef CHARGEN_LITERT_API_H
#define CHARGEN_LITERT_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int LrStatus; /* LiteRtStatus: 0 is success */
#define LR_OK 0

/* Opaque handles. */
typedef struct LrEnvironment_* LrEnvironment;
typedef struct LrModel_* LrModel;
typedef struct LrSignature_* LrSignature;
typedef struct LrTensor_* LrTensor;
typedef struct LrOptions_* LrOptions;
typedef struct LrOpaqueOptions_* LrOpaqueOptions;
typedef struct LrCompiledModel_* LrCompiledModel;
typedef struct LrTensorBuffer_* LrTensorBuffer;
typedef struct LrBufferRequirements_* LrBufferRequirements;
typedef size_t LrIndex; /* LiteRtParamIndex */

/* Element types (the TFLite type codes). */
enum { LR_FLOAT32 = 1, LR_INT32 = 2, LR_BOOL = 6 };
enum { LR_ACCELERATOR_CPU = 1 };
enum { LR_LOCK_READ = 0, LR_LOCK_WRITE = 1 };
#define LR_MAX_RANK 8

/* A tensor's shape: a 7-bit rank and a strides flag packed into one 32-bit word, then the sizes
 * (-1 = dynamic) and the strides. 68 bytes. */
typedef struct {
  unsigned int rank : 7;
  unsigned int has_strides : 1;
  int32_t dimensions[LR_MAX_RANK];
  uint32_t strides[LR_MAX_RANK];
} LrLayout;

/* A ranked tensor's type: element type, then the layout. 72 bytes. */
typedef struct {
  int element_type;
  LrLayout layout;
} LrTensorType;


LrStatus LiteRtCreateEnvironment(int num_options, const void* options, LrEnvironment* environment);
void LiteRtDestroyEnvironment(LrEnvironment environment);

LrStatus LiteRtCreateModelFromFile(LrEnvironment environment, const char* path, LrModel* model);
void LiteRtDestroyModel(LrModel model);
LrStatus LiteRtGetModelMetadata(LrModel model, const char* key, const void** data, size_t* size);
LrStatus LiteRtGetNumModelSignatures(LrModel model, LrIndex* count);
LrStatus LiteRtGetModelSignature(LrModel model, LrIndex index, LrSignature* signature);
LrStatus LiteRtGetSignatureKey(LrSignature signature, const char** key);
LrStatus LiteRtGetNumSignatureInputs(LrSignature signature, LrIndex* count);
LrStatus LiteRtGetSignatureInputName(LrSignature signature, LrIndex index, const char** name);
LrStatus LiteRtGetSignatureInputTensorByIndex(LrSignature signature, LrIndex index, LrTensor* tensor);
LrStatus LiteRtGetNumSignatureOutputs(LrSignature signature, LrIndex* count);
LrStatus LiteRtGetSignatureOutputName(LrSignature signature, LrIndex index, const char** name);
LrStatus LiteRtGetSignatureOutputTensorByIndex(LrSignature signature, LrIndex index, LrTensor* tensor);
LrStatus LiteRtGetRankedTensorType(LrTensor tensor, LrTensorType* type);

LrStatus LiteRtCreateOptions(LrOptions* options);
LrStatus LiteRtSetOptionsHardwareAccelerators(LrOptions options, int accelerators);
void LiteRtDestroyOptions(LrOptions options);
/* Accelerator options travel as opaque options: an identifier and a payload. The CPU accelerator's are
 * "xnnpack" and a TOML text such as "num_threads = 2\n" (a C string the library frees with `destroy`). */
LrStatus LiteRtCreateOpaqueOptions(const char* identifier, void* payload, void (*destroy)(void* payload),
                                   LrOpaqueOptions* options);
LrStatus LiteRtAddOpaqueOptions(LrOptions options, LrOpaqueOptions opaque);

LrStatus LiteRtCreateCompiledModel(LrEnvironment environment, LrModel model, LrOptions options,
                                   LrCompiledModel* compiled);
void LiteRtDestroyCompiledModel(LrCompiledModel compiled);
LrStatus LiteRtCompiledModelResizeInputTensor(LrCompiledModel compiled, LrIndex signature, LrIndex input,
                                              const int* dims, size_t rank);
LrStatus LiteRtGetCompiledModelOutputTensorLayouts(LrCompiledModel compiled, LrIndex signature, size_t count,
                                                   LrLayout* layouts, bool update_allocation);
LrStatus LiteRtGetCompiledModelInputBufferRequirements(LrCompiledModel compiled, LrIndex signature,
                                                       LrIndex input, LrBufferRequirements* requirements);
LrStatus LiteRtGetCompiledModelOutputBufferRequirements(LrCompiledModel compiled, LrIndex signature,
                                                        LrIndex output, LrBufferRequirements* requirements);
LrStatus LiteRtGetTensorBufferRequirementsBufferSize(LrBufferRequirements requirements, size_t* size);
LrStatus LiteRtRunCompiledModel(LrCompiledModel compiled, LrIndex signature, size_t num_inputs,
                                LrTensorBuffer* inputs, size_t num_outputs, LrTensorBuffer* outputs);

LrStatus LiteRtCreateTensorBufferFromHostMemory(const LrTensorType* type, void* memory, size_t size,
                                                void (*deallocator)(void* memory), LrTensorBuffer* buffer);
void LiteRtDestroyTensorBuffer(LrTensorBuffer buffer);

#ifdef __cplusplus
}
#endif

#endif /* CHARGEN_LITERT_API_H */
