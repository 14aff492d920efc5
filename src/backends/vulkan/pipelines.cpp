// The embedded SPIR-V shaders (compiled at build time by cmake/vulkan_shaders.cmake) and their compute
// pipelines, made once per device through a pipeline cache kept on disk
// ($ESPRESSO_VULKAN_CACHE, else $XDG_CACHE_HOME/espresso or ~/.cache/espresso).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "backends/tactic_cache.h"
#include "backends/vulkan/context.h"
#include "espresso/errors.h"

namespace espresso::vulkan {
namespace {

#include "backends/vulkan/spirv/vulkan_shaders.inc"

struct Shader {
  std::string_view name;
  const std::uint32_t* code;
  std::size_t bytes;
};

constexpr Shader kShaders[] = {
#define ESPRESSO_SHADER(stem) {#stem, spirv_##stem, sizeof(spirv_##stem)},
#include "backends/vulkan/spirv/vulkan_shaders.inc"
#undef ESPRESSO_SHADER
};

const Shader* shader_named(std::string_view name) {
  for (const Shader& s : kShaders) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const Shader& find_shader(std::string_view name) {
  if (const Shader* s = shader_named(name)) return *s;
  throw DeviceError("no Vulkan shader named '" + std::string(name) + "' is built in");
}

}  // namespace

bool has_shader(std::string_view name) { return shader_named(name) != nullptr; }

void DeviceContext::init_pipeline_cache() {
  std::vector<char> data;
  const std::filesystem::path dir = backend_cache_directory("ESPRESSO_VULKAN_CACHE");
  if (!dir.empty()) {
    const VkPhysicalDeviceProperties& p = physical_->properties;
    char name[64];
    std::snprintf(name, sizeof(name), "vulkan-%04x-%04x-%08x.bin", p.vendorID, p.deviceID, p.driverVersion);
    pipeline_cache_path_ = (dir / name).string();
    std::ifstream in(pipeline_cache_path_, std::ios::binary);
    if (in) data.assign(std::istreambuf_iterator<char>(in), {});
  }
  VkPipelineCacheCreateInfo info{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  info.initialDataSize = data.size();
  info.pInitialData = data.empty() ? nullptr : data.data();
  // The driver checks the header and ignores data of another device or version; a corrupt file is dropped.
  if (api().vkCreatePipelineCache(device_, &info, nullptr, &pipeline_cache_) != VK_SUCCESS) {
    info.initialDataSize = 0;
    info.pInitialData = nullptr;
    check(api().vkCreatePipelineCache(device_, &info, nullptr, &pipeline_cache_), "vkCreatePipelineCache");
  }
}

void DeviceContext::save_pipeline_cache() {
  const std::lock_guard lock(pipeline_mutex_);
  if (!pipeline_cache_dirty_ || pipeline_cache_path_.empty()) return;
  pipeline_cache_dirty_ = false;
  std::size_t size = 0;
  if (api().vkGetPipelineCacheData(device_, pipeline_cache_, &size, nullptr) != VK_SUCCESS || size == 0) return;
  std::vector<char> data(size);
  if (api().vkGetPipelineCacheData(device_, pipeline_cache_, &size, data.data()) != VK_SUCCESS) return;
  // A cache is an optimisation: failing to write it (read-only home) is not an error.
  std::error_code error;
  const std::filesystem::path path(pipeline_cache_path_);
  std::filesystem::create_directories(path.parent_path(), error);
  const std::string temporary = pipeline_cache_path_ + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::binary);
    if (!out) return;
    out.write(data.data(), static_cast<std::streamsize>(size));
  }
  std::filesystem::rename(temporary, path, error);
  if (error) std::filesystem::remove(temporary, error);
}

const Pipeline& DeviceContext::pipeline(std::string_view shader, std::uint32_t bindings) {
  const std::lock_guard lock(pipeline_mutex_);
  if (auto it = pipelines_.find(shader); it != pipelines_.end()) return it->second;
  const Shader& source = find_shader(shader);
  const Api& vk = api();
  Pipeline p;
  p.bindings = bindings;
  std::vector<VkDescriptorSetLayoutBinding> layout_bindings(bindings);
  for (std::uint32_t i = 0; i < bindings; ++i) {
    layout_bindings[i] = {i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
  }
  VkDescriptorSetLayoutCreateInfo set_info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  set_info.bindingCount = bindings;
  set_info.pBindings = layout_bindings.data();
  check(vk.vkCreateDescriptorSetLayout(device_, &set_info, nullptr, &p.set_layout), "vkCreateDescriptorSetLayout");
  const VkPushConstantRange push{VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushConstantBytes};
  VkPipelineLayoutCreateInfo layout_info{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  layout_info.setLayoutCount = 1;
  layout_info.pSetLayouts = &p.set_layout;
  layout_info.pushConstantRangeCount = 1;
  layout_info.pPushConstantRanges = &push;
  check(vk.vkCreatePipelineLayout(device_, &layout_info, nullptr, &p.layout), "vkCreatePipelineLayout");
  VkShaderModuleCreateInfo module_info{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  module_info.codeSize = source.bytes;
  module_info.pCode = source.code;
  VkShaderModule module = VK_NULL_HANDLE;
  check(vk.vkCreateShaderModule(device_, &module_info, nullptr, &module), "vkCreateShaderModule");
  VkComputePipelineCreateInfo info{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  info.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
  info.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  info.stage.module = module;
  info.stage.pName = "main";
  info.layout = p.layout;
  const VkResult created = vk.vkCreateComputePipelines(device_, pipeline_cache_, 1, &info, nullptr, &p.pipeline);
  vk.vkDestroyShaderModule(device_, module, nullptr);
  check(created, ("vkCreateComputePipelines (shader " + std::string(shader) + ")").c_str());
  pipeline_cache_dirty_ = true;
  return pipelines_.emplace(std::string(shader), p).first->second;
}

}  // namespace espresso::vulkan
